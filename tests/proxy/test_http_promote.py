"""A 2026-07-28 client calling a handshake-era upstream through the HTTP listener's relay.

The listener's direct route relays such a POST on the upstream's lane; when the upstream
asks something mid-call (elicitation, sampling, roots), the call is promoted into a round
trip of the SDK route's ledger (:mod:`agentguard.proxy.promote`): the POST gets the
``InputRequiredResult`` the SDK route would give, and the retry goes on there. Every answer
(status, content type, body) is compared with the same exchange through a ``--no-relay``
proxy, the same but for the random ``requestState``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from agentguard.proxy.config import ProxyConfig, UpstreamConfig
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.handlers import build_server
from agentguard.proxy.runner import build_guard, http_stack, listening
from tests.proxy.conftest import (
    OPS_SERVER,
    PYTHON,
    WEATHER_SERVER,
    ProxyUnderTest,
    free_port,
    running,
)
from tests.proxy.test_stdio_promote import (
    ASKING,
    ASKING_SERVER,
    ENVELOPE,
    PROMOTED,
    _asking_policy,
    _children,
    masked,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ROUTES = ["relay", "sdk"]
RELAYED = "is relayed on HTTP (handshake-era upstream, promoted should it ask)"


def post(rid: int, name: str, args: dict[str, Any], **params: Any
         ) -> tuple[dict[str, str], bytes]:
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
               "mcp-name": name}
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": args, "_meta": ENVELOPE, **params}}
    return headers, json.dumps(body).encode()


def retry(rid: int, name: str, args: dict[str, Any], state: str,
          responses: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return post(rid, name, args, requestState=state, inputResponses=responses)


class Proxy:
    """One ``--listen`` proxy process under test."""

    def __init__(self, proc: Any, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def text(self) -> str:
        return self.log.read_text()

    async def call(self, http: httpx2.AsyncClient, message: tuple[dict[str, str], bytes]
                   ) -> tuple[int, str, Any]:
        headers, body = message
        response = await http.post(self.url, headers=headers, content=body)
        answer = response.json()
        return response.status_code, response.headers.get("content-type", ""), masked(answer)


@asynccontextmanager
async def listening_proxy(proxy: ProxyUnderTest, tmp_path: Path, route: str, *upstream: str,
                          name: str) -> AsyncIterator[Proxy]:
    port = free_port()
    argv = [PYTHON, "-m", "agentguard.proxy", "--policy", str(proxy.policy), "--store",
            proxy.store_url, "--audit", str(proxy.audit), "--name", name,
            "--log-level", "DEBUG", "--upstream-mode", "legacy",
            "--listen", f"127.0.0.1:{port}", *(("--no-relay",) if route == "sdk" else ()),
            "--", *upstream]
    log = tmp_path / f"proxy-{route}.log"
    async with running(argv, proxy.env(), port, log=log) as proc:
        yield Proxy(proc, f"http://127.0.0.1:{port}/mcp", log)


def ops(proxy: ProxyUnderTest) -> tuple[str, ...]:
    return (PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))


async def test_a_plain_call_is_relayed_and_answered_as_the_sdk_route_answers(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    seen: dict[str, list[Any]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            async with listening_proxy(proxy, tmp_path, route, *ops(proxy),
                                       name="ops") as up:
                seen[route] = [await up.call(http, post(1, "get_status", {"service": "api"})),
                               await up.call(http, post(2, "get_status", {"service": "no"})),
                               await up.call(http, post(3, "get_status", {}))]
                text = up.text()
                assert "upstream 'ops' connected (2025-11-25" in text, text
                assert text.count(RELAYED) == (3 if route == "relay" else 0), text
                assert PROMOTED not in text
    assert seen["relay"] == seen["sdk"]
    status, kind, answer = seen["relay"][0]
    assert status == 200 and kind == "application/json"
    assert answer["result"]["resultType"] == "complete" and not answer["result"]["isError"]


@pytest.mark.parametrize(("tool", "args", "response", "text"), ASKING)
async def test_an_upstream_that_asks_mid_call_promotes_the_call_into_a_round_trip(
        proxy: ProxyUnderTest, tmp_path: Path, tool: str, args: dict[str, Any],
        response: dict[str, Any], text: str) -> None:
    seen: dict[str, list[Any]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            async with listening_proxy(proxy, tmp_path, route, *ops(proxy),
                                       name="ops") as up:
                headers, body = post(1, tool, args)
                raw = await http.post(up.url, headers=headers, content=body)
                first = raw.json()["result"]
                assert first["resultType"] == "input_required", first
                (key,) = first["inputRequests"]
                final = await up.call(http, retry(2, tool, args, first["requestState"],
                                                  {key: response}))
                seen[route] = [(raw.status_code, raw.headers["content-type"],
                                masked(raw.json())), final]
                log = up.text()
                if route == "relay":
                    assert log.count(f"{tool!r} {RELAYED}") == 1, log
                    assert log.count(PROMOTED) == 1, log
                else:
                    assert RELAYED not in log and PROMOTED not in log, log
    assert seen["relay"] == seen["sdk"]
    status, _kind, answer = seen["relay"][1]
    assert status == 200 and answer["result"]["content"][0]["text"] == text, answer


async def test_a_retry_with_a_tampered_state_or_other_arguments_is_refused(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    tool, args, response, _ = ASKING[0]
    seen: dict[str, list[Any]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            async with listening_proxy(proxy, tmp_path, route, *ops(proxy),
                                       name="ops") as up:
                headers, body = post(1, tool, args)
                first = (await http.post(up.url, headers=headers, content=body)).json()
                state, (key,) = (first["result"]["requestState"],
                                 first["result"]["inputRequests"])
                tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
                out = [await up.call(http, retry(2, tool, args, tampered, {key: response})),
                       await up.call(http, retry(3, tool, {"service": "billing"}, state,
                                                 {key: response})),
                       await up.call(http, retry(4, tool, args, state, {key: response})),
                       await up.call(http, post(5, "get_status", {"service": "api"}))]
                seen[route] = out
                assert (PROMOTED in up.text()) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    for _status, _kind, refused in seen["relay"][:3]:
        assert refused["error"]["code"] == -32602, refused
    assert seen["relay"][3][2]["result"]["isError"] is False


async def test_a_stray_session_header_binds_the_round_trip_as_on_the_sdk_route(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """A 2026-07-28 POST naming no session the proxy knows: the SDK route binds its round
    trip to the header all the same, so a retry without it (or with another) is refused."""
    tool, args, response, _ = ASKING[0]
    seen: dict[str, list[Any]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            async with listening_proxy(proxy, tmp_path, route, *ops(proxy),
                                       name="ops") as up:
                out: list[Any] = []
                for other in ("", "s-2", "s-1"):
                    headers, body = post(1, tool, args)
                    raw = await http.post(up.url, content=body,
                                          headers={**headers, "mcp-session-id": "s-1"})
                    out.append((raw.status_code, raw.headers["content-type"],
                                masked(raw.json())))
                    result = raw.json().get("result") or {}
                    if result.get("resultType") != "input_required":
                        break
                    (key,) = result["inputRequests"]
                    headers, body = retry(2, tool, args, result["requestState"],
                                          {key: response})
                    if other:
                        headers["mcp-session-id"] = other
                    out.append(await up.call(http, (headers, body)))
                seen[route] = out
                assert (PROMOTED in up.text()) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    first, without, _, other, _, same = seen["relay"]
    assert first[2]["result"]["resultType"] == "input_required", first
    assert without[2]["error"]["code"] == other[2]["error"]["code"] == -32602
    assert same[2]["result"]["resultType"] == "complete", same


async def test_an_upstream_that_crashes_mid_call_fails_the_call_as_the_sdk_route_does(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    tool, args, response, _ = ASKING[0]
    seen: dict[str, list[Any]] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            async with listening_proxy(proxy, tmp_path, route, PYTHON, WEATHER_SERVER,
                                       name="weather") as up:
                seen[route] = [await up.call(http, post(1, "crash", {})),
                               await up.call(http, post(2, "echo", {"value": "again"}))]
                assert (RELAYED in up.text()) is (route == "relay")
            # Crashing while a promoted call waits for the client's answer: the retry hears it.
            async with listening_proxy(proxy, tmp_path, route, *ops(proxy),
                                       name="ops") as up:
                headers, body = post(1, tool, args)
                first = (await http.post(up.url, headers=headers, content=body)).json()
                assert first["result"]["resultType"] == "input_required", first
                (upstream_pid,) = _children(up.proc.pid)
                os.kill(upstream_pid, signal.SIGKILL)
                with anyio.fail_after(30):
                    while "restarting upstream" not in up.text():
                        await anyio.sleep(0.05)
                (key,) = first["result"]["inputRequests"]
                seen[route].append(await up.call(http, retry(
                    2, tool, args, first["result"]["requestState"], {key: response})))
                seen[route].append(await up.call(http, post(3, "get_status",
                                                             {"service": "api"})))
                assert (PROMOTED in up.text()) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    crashed, restarted, lost, control = (answer for _s, _k, answer in seen["relay"])
    assert "closed the connection during the request" in crashed["error"]["message"]
    assert restarted["result"]["content"][0]["text"] == "again"
    assert "closed the connection during the request" in lost["error"]["message"], lost
    assert control["result"]["isError"] is False


@asynccontextmanager
async def in_process(proxy: ProxyUnderTest, ping_interval: float
                     ) -> AsyncIterator[tuple[str, ProxyCore]]:
    """The ``--listen`` proxy in this process, in front of the asking server (handshake
    era), with a given event-stream window."""
    _asking_policy(proxy)
    config = ProxyConfig(policy=str(proxy.policy), store=proxy.store_url,
                         audit=str(proxy.audit), servers=[UpstreamConfig(
                             name="asking", command=PYTHON, args=[ASKING_SERVER],
                             mode="legacy")])
    async with build_guard(config) as guard, ProxyCore(config, guard) as core:
        await core.started()
        server = build_server(core)
        stack = http_stack(server, core, config, "127.0.0.1", ping_interval=ping_interval)
        async with listening(server, stack, config, "127.0.0.1", 0) as bound:
            port = bound.sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}/mcp", core


async def test_a_promotion_after_pings_answers_with_the_streams_message_event(
        proxy: ProxyUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    """The answer had already become an event stream (a zero window): the
    ``InputRequiredResult`` is its message event, and nothing is written after it."""
    caplog.set_level("DEBUG", logger="agentguard.proxy")
    async with in_process(proxy, 0.0) as (url, core), httpx2.AsyncClient(timeout=30) as http:
        headers, body = post(1, "ask_and_wait", {})
        response = await http.post(url, headers=headers, content=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        text = response.text
        assert text.startswith(": ping\r\n\r\n") and text.count("event: message") == 1, text
        answer = json.loads(text.rsplit("event: message\r\ndata: ", 1)[1])
        result = answer["result"]
        assert answer["id"] == 1 and result["resultType"] == "input_required", answer
        assert PROMOTED in caplog.text and RELAYED in caplog.text
        (key,) = result["inputRequests"]
        final = await http.post(url, headers=headers, content=retry(
            2, "ask_and_wait", {}, result["requestState"],
            {key: {"action": "accept", "content": {"go": True}}})[1])
        assert "answered accept" in final.text, final.text
        # The same connection goes on serving relayed calls.
        after = await http.post(url, headers={**headers, "mcp-name": "wait"},
                                content=post(3, "wait", {"seconds": 0})[1])
        assert "waited 0" in after.text, after.text
        assert len(core.ledger or ()) == 0


async def test_a_client_that_hangs_up_before_any_question_abandons_the_upstream_call(
        proxy: ProxyUnderTest) -> None:
    async with in_process(proxy, 0.2) as (url, core), httpx2.AsyncClient(timeout=30) as http:
        lane = core.upstreams["asking"].lane
        assert lane is not None
        headers, body = post(1, "wait", {"seconds": 30})
        async with http.stream("POST", url, headers={**headers, "mcp-name": "wait"},
                               content=body) as resp:
            async for chunk in resp.aiter_bytes():
                assert b": ping" in chunk and lane.pending()
                break
        with anyio.fail_after(10):
            while lane.pending():
                await anyio.sleep(0.05)
        assert not core._askers["asking"]  # its promotion no longer routes questions


async def test_a_client_that_hangs_up_after_the_question_leaves_the_round_trip_open(
        proxy: ProxyUnderTest) -> None:
    """As on the SDK route: the round trip waits in the ledger for a retry (or its idle
    timeout), whichever connection brings it."""
    async with in_process(proxy, 30.0) as (url, core):
        headers, body = post(1, "ask_and_wait", {})
        async with httpx2.AsyncClient(timeout=30) as http:
            result = (await http.post(url, headers=headers, content=body)).json()["result"]
        assert result["resultType"] == "input_required"
        assert len(core.ledger or ()) == 1
        (key,) = result["inputRequests"]
        async with httpx2.AsyncClient(timeout=30) as http:
            final = await http.post(url, headers=headers, content=retry(
                2, "ask_and_wait", {}, result["requestState"],
                {key: {"action": "decline"}})[1])
        assert "answered decline" in final.text, final.text
        assert len(core.ledger or ()) == 0 and not core._askers["asking"]
