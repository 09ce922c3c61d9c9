"""The HTTP relay answers exactly as the SDK stacks it skips.

Two proxy processes run side by side, one with the relay and one with
``--no-relay``, and every request goes to both:

- downstream: raw 2026-07-28 POSTs, good and bad (Host, Origin, Content-Type, Accept,
  routing-header mismatches and duplicates, envelope and parameter defects, unknown tools,
  tool errors, progress tokens) get the same status and the same JSON-RPC body;
- (the handshake era's raw POSTs are in ``test_http_handshake.py``);
- upstream: a real SDK client calls through a proxy fronting an HTTP server that answers
  with redirects, HTML, broken JSON, JSON-RPC errors at 404, bare 500s, 202s and event
  streams (split at odd places, with notifications first); the outcomes are the same.

The relaying proxy's debug log shows that the relay was the one answering.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)

from agentguard.proxy.config import ProxyConfig, UpstreamConfig
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.handlers import build_server
from agentguard.proxy.runner import build_guard, http_stack, listening
from tests.proxy.conftest import (
    OPS_SERVER,
    PYTHON,
    ROOT,
    ProxyUnderTest,
    free_port,
    running,
)
from tests.proxy.http_misbehaving import TRICKS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MISBEHAVING = str(Path(__file__).with_name("http_misbehaving.py"))
VERSION = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}


def _headers(name: str = "get_status", **over: str) -> dict[str, str]:
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": VERSION, "mcp-method": "tools/call", "mcp-name": name}
    headers.update({k.replace("_", "-"): v for k, v in over.items()})
    return {k: v for k, v in headers.items() if v}


def _call(rid: Any = 1, name: str = "get_status", arguments: Any = None,
          meta: dict[str, Any] | None = None, **params: Any) -> bytes:
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
        "name": name, "arguments": {"service": "api"} if arguments is None else arguments,
        "_meta": ENVELOPE if meta is None else meta, **params}}
    return json.dumps(body).encode()


DOWNSTREAM_CASES: list[tuple[str, Any, bytes]] = [
    ("allowed", _headers(), _call()),
    ("string id", _headers(), _call(rid="abc")),
    ("tool error", _headers(), _call(arguments={"service": "nope"})),
    ("foreign host", _headers(host="evil.example:80"), _call()),
    ("foreign origin", _headers(origin="http://evil.example"), _call()),
    ("text content type", _headers(content_type="text/plain"), _call()),
    ("json-only accept", _headers(accept="application/json"), _call()),
    ("wildcard accept", _headers(accept="*/*"), _call()),
    ("name header mismatch", _headers(name="list_services"), _call()),
    ("method header mismatch", _headers(mcp_method="tools/list"), _call()),
    ("duplicated routing header", [*_headers().items(), ("mcp-method", "tools/call")],
     _call()),
    ("version header mismatch", _headers(mcp_protocol_version="2025-11-25"), _call()),
    ("missing capabilities", _headers(),
     _call(meta={"io.modelcontextprotocol/protocolVersion": VERSION})),
    ("no envelope", _headers(), _call(meta={})),
    ("arguments not an object", _headers(), _call(arguments=[1, 2])),
    ("wrong argument type", _headers(), _call(arguments={"service": 7})),
    ("extra parameter", _headers(), _call(task={"ttl": 1000})),
    ("unknown tool", _headers(name="no_such_tool"), _call(name="no_such_tool")),
    ("progress token", _headers(), _call(meta={**ENVELOPE, "progressToken": "p1"})),
    ("stray Mcp-Param header", _headers(mcp_param_service="billing"), _call()),
    ("foreign origin first", [*_headers().items(), ("origin", "http://evil.example"),
                              ("origin", "http://127.0.0.1:1")], _call()),
    ("text content type first", [("content-type", "text/plain"), *_headers().items()],
     _call()),
    ("not JSON-RPC 2.0", _headers(), _call().replace(b'"2.0"', b'"1.0"')),
    ("boolean id", _headers(), _call(rid=True)),
]


def _proxy_argv(proxy: ProxyUnderTest, *extra: str, fast: bool) -> list[str]:
    argv = [PYTHON, "-m", "agentguard.proxy", "--policy", str(proxy.policy), "--store",
            proxy.store_url, "--audit", str(proxy.audit), "--name", "ops",
            "--log-level", "DEBUG" if fast else "WARNING"]
    return [*argv, *(() if fast else ("--no-relay",)), *extra]


def _outcome(response: httpx2.Response) -> tuple[int, str, Any]:
    kind = response.headers.get("content-type", "")
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, kind, body


async def test_the_downstream_relay_answers_every_request_as_the_sdk(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    fast_port, full_port = free_port(), free_port()
    upstream = ("--", PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))
    log = tmp_path / "fast.log"
    fast = _proxy_argv(proxy, "--listen", f"127.0.0.1:{fast_port}", *upstream, fast=True)
    full = _proxy_argv(proxy, "--listen", f"127.0.0.1:{full_port}", *upstream, fast=False)
    async with running(fast, proxy.env(), fast_port, log=log), \
            running(full, proxy.env(), full_port), httpx2.AsyncClient(timeout=30) as http:
        # Twice: the second pass meets the relay's memory of the checks it passed.
        for label, headers, body in DOWNSTREAM_CASES + DOWNSTREAM_CASES:
            got = [_outcome(await http.post(f"http://127.0.0.1:{port}/mcp", content=body,
                                            headers=headers))
                   for port in (fast_port, full_port)]
            assert got[0] == got[1], label
            if label == "allowed":
                assert got[0][0] == 200 and got[0][2]["result"]["content"][0]["text"] \
                    .startswith("api: running")
    taken = log.read_text().count("is relayed on HTTP")
    assert taken >= 8, log.read_text()[-3000:]  # allowed, string id, tool error, wildcard...


async def _call_outcome(client: Any, service: str) -> tuple[Any, ...]:
    try:
        result = await client.call_tool("get_status", {"service": service})
    except MCPError as exc:
        return ("error", exc.error.code, exc.error.message)
    return ("result", result.is_error, [getattr(c, "text", None) for c in result.content])


async def test_the_raw_upstream_lane_reads_every_answer_as_the_sdk(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    log = tmp_path / "fast.log"
    outcomes: dict[bool, dict[str, tuple[Any, ...]]] = {}
    async with running([PYTHON, MISBEHAVING, str(port)], proxy.env(), port):
        for fast in (True, False):
            argv = _proxy_argv(proxy, "--upstream-url", url, fast=fast)
            # The proxy's stderr (its debug log) goes to a file, stdio stays the protocol.
            params = StdioServerParameters(command="sh", args=[
                "-c", f'exec "$0" "$@" 2>>"{log}"', *argv], env=proxy.env(), cwd=str(ROOT))
            async with proxy.client(params, "auto") as client:
                outcomes[fast] = {s: await _call_outcome(client, s) for s in (*TRICKS, "api")}
    assert outcomes[True] == outcomes[False]
    assert log.read_text().count("on raw HTTP") >= len(TRICKS), log.read_text()[-3000:]
    seen = outcomes[True]
    assert seen["api"][0] == "result" and seen["api"][2][0].startswith("api: running")
    assert seen["redirect"] == seen["api"]  # followed within the origin
    assert seen["sse"] == ("result", False, ["answered over sse"])
    assert seen["rpc-404"] == ("error", -32601, "no such method here")
    assert seen["html"][0] == "error" and "text/html" in seen["html"][2]
    assert seen["sse-no-answer"][0] == "error" and "may or may not" in seen["sse-no-answer"][2]


@asynccontextmanager
async def in_process_proxy(proxy: ProxyUnderTest, ping_interval: float
                           ) -> AsyncIterator[tuple[str, Any]]:
    """The ``--listen`` proxy in this process (its listener included), with a short SSE
    window."""
    config = ProxyConfig(policy=str(proxy.policy), store=proxy.store_url,
                         audit=str(proxy.audit), servers=[UpstreamConfig(
                             name="ops", command=PYTHON,
                             args=[OPS_SERVER, "--root", str(proxy.sandbox)])])
    async with build_guard(config) as guard, ProxyCore(config, guard) as core:
        await core.started()
        server = build_server(core)
        stack = http_stack(server, core, config, "127.0.0.1", ping_interval=ping_interval)
        async with listening(server, stack, config, "127.0.0.1", 0) as bound:
            port = bound.sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}/mcp", core


async def test_a_slow_allowed_call_becomes_an_event_stream_with_pings(
        proxy: ProxyUnderTest) -> None:
    async with in_process_proxy(proxy, 0.2) as (url, _), \
            httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, headers=_headers(name="count_to"),
                                   content=_call(name="count_to", arguments={"n": 12}))
        assert response.headers["content-type"] == "text/event-stream"
        text = response.text
        assert text.count(": ping\r\n\r\n") >= 2, text
        event = text.rsplit("event: message\r\ndata: ", 1)[1]
        answer = json.loads(event)
        assert answer["id"] == 1
        assert answer["result"]["content"][0]["text"] == "counted to 12"
        fast = await http.post(url, headers=_headers(), content=_call())
        assert fast.headers["content-type"] == "application/json"  # answered in the window


async def test_a_client_that_hangs_up_abandons_the_upstream_call(
        proxy: ProxyUnderTest) -> None:
    async with in_process_proxy(proxy, 0.2) as (url, core), \
            httpx2.AsyncClient(timeout=30) as http:
        lane = core.upstreams["ops"].lane
        async with http.stream("POST", url, headers=_headers(name="count_to"),
                               content=_call(name="count_to", arguments={"n": 400})) as resp:
            async for chunk in resp.aiter_bytes():
                assert b": ping" in chunk
                assert lane.pending()  # the relayed call is in flight
                break
        with anyio.fail_after(10):
            while lane.pending():
                await anyio.sleep(0.05)
        # Under load even this quick call may outlast the 0.2 s window: JSON or event stream.
        after = _answer(await http.post(url, headers=_headers(), content=_call()))
        assert after["result"]["content"][0]["text"].startswith("api: running")


MAINTENANCE = _call(name="schedule_maintenance", arguments={"service": "api"}, meta={
    **ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})


@pytest.mark.parametrize("window", [30.0, 0.0])
async def test_an_allowed_call_that_asks_for_input_is_answered_by_the_full_path(
        proxy: ProxyUnderTest, window: float, caplog: pytest.LogCaptureFixture) -> None:
    """The upstream answers ``input_required``: the SDK app relays the questions, in JSON or,
    once the event stream has begun (a zero window), as its last event. The relay sent the
    call upstream once: the ASGI stack it is handed to does not relay it again."""
    caplog.set_level(logging.DEBUG, logger="agentguard.proxy.http_relay")
    async with in_process_proxy(proxy, window) as (url, _), \
            httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, headers=_headers(name="schedule_maintenance"),
                                   content=MAINTENANCE)
        assert response.status_code == 200, response.text
        if window:
            assert response.headers["content-type"] == "application/json"
        else:
            assert response.headers["content-type"] == "text/event-stream"
            assert response.text.startswith(": ping\r\n\r\n")
        answer = _answer(response)
        assert answer["id"] == 1 and answer["result"]["resultType"] == "input_required"
        assert caplog.text.count("'schedule_maintenance' is relayed on HTTP") == 1, caplog.text
        after = _answer(await http.post(url, headers=_headers(), content=_call(rid=2)))
        assert after["result"]["content"][0]["text"].startswith("api: running")


def _answer(response: httpx2.Response) -> Any:
    if response.headers["content-type"] == "application/json":
        return response.json()
    return json.loads(response.text.rsplit("event: message\r\ndata: ", 1)[1])


async def test_a_relay_that_cannot_send_hands_the_call_to_the_sdk_route(
        proxy: ProxyUnderTest) -> None:
    async with in_process_proxy(proxy, 30.0) as (url, core), \
            httpx2.AsyncClient(timeout=30) as http:
        lane = core.upstreams["ops"].lane
        learned = lane.envelope  # what the SDK client stamped on its own requests
        assert learned is not None and learned[PROTOCOL_VERSION_META_KEY] == VERSION
        assert set(learned) >= {CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY}
        lane.envelope = None  # as before the SDK's first request: nothing to stamp with
        response = await http.post(url, headers=_headers(), content=_call())
        assert response.status_code == 200, response.text
        assert response.json()["result"]["content"][0]["text"].startswith("api: running")
        assert lane.envelope == learned  # the SDK route's request taught it again


async def test_bearer_authentication_runs_before_any_fast_answer(proxy: ProxyUnderTest) -> None:
    """With OAuth configured, every request meets the bearer check in the ASGI stack before
    the relay (inside it) may answer it."""
    from agentguard.proxy.config import OAuthConfig

    config = ProxyConfig(policy=str(proxy.policy), store=proxy.store_url,
                         audit=str(proxy.audit), servers=[UpstreamConfig(
                             name="ops", command=PYTHON, args=[OPS_SERVER])])
    async with build_guard(config) as guard, ProxyCore(config, guard) as core:
        server = build_server(core)
        assert type(http_stack(server, core, config, "127.0.0.1").app).__name__ == \
            "HardenedASGI"
        secured = config.model_copy(update={"oauth": OAuthConfig(
            issuer="https://idp.example", jwks_uri="https://idp.example/jwks",
            resource="https://proxy.example/mcp")})
        stack = http_stack(server, core, secured, "127.0.0.1")
        assert stack.protocol == "httptools"
        assert type(stack.app).__name__ == "BearerAuth"


def _raw(body: bytes, port: int, **over: str) -> bytes:
    headers = {**_headers(**over), "host": f"127.0.0.1:{port}",
               "content-length": str(len(body))}
    head = "POST /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _read_answers(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    answers = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answers.append(json.loads(await reader.readexactly(length)))
    return answers


async def test_pipelined_and_unusual_requests_on_one_connection(
        proxy: ProxyUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    """HTTP/1.1 edge cases around the relay: requests pipelined in one write (relayed, SDK
    route, relayed) answered in order; ``Expect: 100-continue``; a large body; a
    ``Connection: close`` request."""
    caplog.set_level(logging.DEBUG, logger="agentguard.proxy.http_relay")
    async with in_process_proxy(proxy, 30.0) as (url, _):
        port = int(url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {
            "_meta": ENVELOPE}}).encode()
        writer.write(_raw(_call(rid=1), port) + _raw(listing, port, mcp_method="tools/list",
                                                     mcp_name="") + _raw(_call(rid=3), port))
        first, second, third = await asyncio.wait_for(_read_answers(reader, 3), 20)
        assert (first["id"], second["id"], third["id"]) == (1, 2, 3)
        assert first["result"]["content"][0]["text"].startswith("api: running")
        assert "get_status" in {t["name"] for t in second["result"]["tools"]}

        body = _call(rid=4)
        request = _raw(body, port, expect="100-continue")
        writer.write(request[:-len(body)])
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == \
            b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await asyncio.wait_for(_read_answers(reader, 1), 20))[0]["id"] == 4

        big = _call(rid=5, meta={**ENVELOPE, "padding": "x" * 100_000})
        writer.write(_raw(big, port))
        answer = (await asyncio.wait_for(_read_answers(reader, 1), 20))[0]
        assert answer["id"] == 5 and "result" in answer

        writer.write(_raw(_call(rid=6), port, connection="close"))
        answer = (await asyncio.wait_for(_read_answers(reader, 1), 20))[0]
        assert answer["id"] == 6
        assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection closed
        writer.close()
    # Calls 1, 3, 4, 5 and 6 were relayed.
    assert caplog.text.count("is relayed on HTTP") == 5, caplog.text


async def test_the_public_url_host_passes_dns_rebinding_protection(
        proxy: ProxyUnderTest) -> None:
    port = free_port()
    argv = _proxy_argv(proxy, "--listen", f"127.0.0.1:{port}", "--public-url",
                       "https://agentguard.example:8443/ag", "--", PYTHON, OPS_SERVER,
                       fast=False)
    async with running(argv, proxy.env(), port), httpx2.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/mcp"
        behind = await http.post(url, content=_call(), headers=_headers(
            host="agentguard.example:8443", origin="https://agentguard.example:8443"))
        assert behind.status_code == 200, behind.text
        foreign = await http.post(url, content=_call(), headers=_headers(
            host="evil.example:8443"))
        assert foreign.status_code == 421
