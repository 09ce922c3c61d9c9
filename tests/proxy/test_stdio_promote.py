"""A 2026-07-28 client calling a handshake-era upstream over the stdio relay, spoken raw.

The relay carries such a call on the wire; when the upstream asks something mid-call
(elicitation, sampling, roots), the call is promoted into a round trip of the SDK route's
ledger: the client gets the ``InputRequiredResult`` the SDK route would give, and its retry
goes on there. Every answer is compared with the same exchange through a ``--no-relay``
proxy (the SDK route), byte for byte but for the random ``requestState``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.proxy.conftest import (
    OPS_SERVER,
    POLICY_TEMPLATE,
    PYTHON,
    WEATHER_SERVER,
    ProxyUnderTest,
)
from tests.proxy.test_stdio_batch import Wire, close_wire

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

VERSION = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}, "sampling": {},
                                                   "roots": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}
PROMOTED = "promoted a relayed tools/call"
ASKING_SERVER = str(Path(__file__).with_name("servers") / "asking.py")
ROUTES = ["relay", "sdk"]


def call(rid: int, name: str, args: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": args, "_meta": ENVELOPE, **params}}


def retry(rid: int, name: str, args: dict[str, Any], state: str,
          responses: dict[str, Any]) -> dict[str, Any]:
    return call(rid, name, args, requestState=state, inputResponses=responses)


def masked(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with its random ``requestState`` masked (it is checked to be there)."""
    result = answer.get("result")
    if isinstance(result, dict) and result.get("resultType") == "input_required":
        state = result["requestState"]
        assert isinstance(state, str) and len(state) >= 24, answer
        return {**answer, "result": {**result, "requestState": "<state>"}}
    return answer


@asynccontextmanager
async def wire_to(proxy: ProxyUnderTest, tmp_path: Path, route: str, *upstream: str,
                  name: str) -> AsyncIterator[Wire]:
    extra = ("--upstream-mode", "legacy", "--log-level", "DEBUG",
             *(("--no-relay",) if route == "sdk" else ()))
    args = proxy.args(*upstream, name=name, extra=extra)
    log = tmp_path / f"proxy-{route}.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        proc = await anyio.open_process([PYTHON, *args], env=proxy.env(), stderr=fd)
    finally:
        os.close(fd)
    try:
        yield Wire(proc, log)
        await close_wire(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def ops(proxy: ProxyUnderTest) -> tuple[str, ...]:
    return (PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))


async def one(wire: Wire, message: dict[str, Any]) -> dict[str, Any]:
    await wire.send(message)
    (answer,) = await wire.answers(1)
    assert answer["id"] == message["id"], answer
    return answer


def log_of(wire: Wire) -> str:
    return wire.log.read_text()


async def test_a_plain_call_is_relayed_and_answered_as_the_sdk_route_answers(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, *ops(proxy), name="ops") as wire:
            seen[route] = [await one(wire, call(1, "get_status", {"service": "api"})),
                           await one(wire, call(2, "get_status", {"service": "nope"})),
                           await one(wire, call(3, "get_status", {}))]  # invalid arguments
            text = log_of(wire)
            assert "upstream 'ops' connected (2025-11-25" in text, text
            relayed = text.count("relayed tools/call get_status to 'ops' on the wire")
            assert relayed == (3 if route == "relay" else 0), text
            assert PROMOTED not in text
    assert seen["relay"] == seen["sdk"]
    result = seen["relay"][0]["result"]
    assert result["resultType"] == "complete" and not result["isError"], result
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "agentguard-proxy"


async def test_an_upstream_error_is_answered_as_the_sdk_route_answers(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, PYTHON, WEATHER_SERVER,
                           name="weather") as wire:
            seen[route] = await one(wire, call(1, "strict_error", {}))
            assert ("relayed tools/call strict_error" in log_of(wire)) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    assert seen["relay"]["error"]["data"] == {"retry_after": 42}


# Each asks the client one thing mid-call (the ops example server, handshake era: pushed).
ASKING = [
    ("schedule_maintenance", {"service": "search"},
     {"action": "accept", "content": {"confirm": True, "minutes": 45}},
     "maintenance for search scheduled for 45 minutes"),
    ("summarize_incident", {"text": "db down"},
     {"role": "assistant", "model": "test", "content": {"type": "text", "text": "all calm"}},
     "summary: all calm"),
    ("show_roots", {}, {"roots": [{"uri": "file:///srv/ops", "name": "ops"}]},
     "file:///srv/ops"),
]


@pytest.mark.parametrize(("tool", "args", "response", "text"), ASKING)
async def test_an_upstream_that_asks_mid_call_promotes_the_call_into_a_round_trip(
        proxy: ProxyUnderTest, tmp_path: Path, tool: str, args: dict[str, Any],
        response: dict[str, Any], text: str) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, *ops(proxy), name="ops") as wire:
            first = await one(wire, call(1, tool, args))
            result = first["result"]
            assert result["resultType"] == "input_required", first
            (key,) = result["inputRequests"]
            final = await one(wire, retry(2, tool, args, result["requestState"],
                                          {key: response}))
            # The same call again: a fresh round trip, under a fresh state.
            again = await one(wire, call(3, tool, args))
            assert again["result"]["requestState"] != result["requestState"]
            seen[route] = [masked(first), final, masked(again)]
            log = log_of(wire)
            if route == "relay":
                assert log.count(f"relayed tools/call {tool} to 'ops' on the wire") == 2, log
                assert log.count(PROMOTED) == 2, log
            else:
                assert "relayed tools/call" not in log and PROMOTED not in log, log
    assert seen["relay"] == seen["sdk"]
    final = seen["relay"][1]["result"]
    assert final["resultType"] == "complete" and final["content"][0]["text"] == text, final


async def test_a_retry_with_a_tampered_state_or_other_arguments_is_refused(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    tool, args, response, _ = ASKING[0]
    seen: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, *ops(proxy), name="ops") as wire:
            out: list[dict[str, Any]] = []
            first = (await one(wire, call(1, tool, args)))["result"]
            state, (key,) = first["requestState"], first["inputRequests"]
            tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
            out.append(await one(wire, retry(2, tool, args, tampered, {key: response})))
            # The state survives a wrong guess (it was not the one presented) ...
            other = {"service": "billing"}
            out.append(await one(wire, retry(3, tool, other, state, {key: response})))
            # ... but not a retry of other arguments: single use, and the work is cancelled.
            out.append(await one(wire, retry(4, tool, args, state, {key: response})))
            # The proxy goes on serving.
            out.append(await one(wire, call(5, "get_status", {"service": "api"})))
            seen[route] = out
    assert seen["relay"] == seen["sdk"]
    tampered_answer, other_answer, reused, control = seen["relay"]
    for refused in (tampered_answer, other_answer, reused):
        assert refused["error"]["code"] == -32602, refused
        assert "requestState" in refused["error"]["message"], refused
    assert control["result"]["isError"] is False


async def test_a_client_that_cancels_mid_call_cancels_it_upstream(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        cancel_log = tmp_path / f"cancel-{route}.log"
        async with wire_to(proxy, tmp_path, route, PYTHON, WEATHER_SERVER, "--cancel-log",
                           str(cancel_log), name="weather") as wire:
            await wire.send(call(1, "hang", {"seconds": 60}))
            with anyio.fail_after(30):
                while (route == "relay") and "relayed tools/call hang" not in log_of(wire):
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # the upstream is in the call
            await wire.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": 1, "reason": "user"}})
            with anyio.fail_after(30):
                while not cancel_log.exists() or "hang cancelled" not in cancel_log.read_text():
                    await anyio.sleep(0.05)
            # No answer for the cancelled call: the next one is the next answer.
            seen[route] = await one(wire, call(2, "echo", {"value": "after"}))
    assert seen["relay"] == seen["sdk"]
    assert seen["relay"]["result"]["content"][0]["text"] == "after"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out.extend(int(c) for c in children)
    return out


async def test_an_upstream_that_crashes_mid_call_fails_the_call_as_the_sdk_route_does(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    tool, args, response, _ = ASKING[0]
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, PYTHON, WEATHER_SERVER,
                           name="weather") as wire:
            out = [await one(wire, call(1, "crash", {})),
                   await one(wire, call(2, "echo", {"value": "restarted"}))]
            seen[route] = out
        # Crashing while a promoted call waits for the client's answer: the retry hears it.
        async with wire_to(proxy, tmp_path, route, *ops(proxy), name="ops") as wire:
            first = (await one(wire, call(1, tool, args)))["result"]
            assert first["resultType"] == "input_required"
            (upstream_pid,) = _children(wire.proc.pid)
            os.kill(upstream_pid, signal.SIGKILL)
            with anyio.fail_after(30):
                while "restarting upstream" not in log_of(wire):
                    await anyio.sleep(0.05)
            (key,) = first["inputRequests"]
            seen[route].append(await one(wire, retry(2, tool, args, first["requestState"],
                                                     {key: response})))
            seen[route].append(await one(wire, call(3, "get_status", {"service": "api"})))
            assert (PROMOTED in log_of(wire)) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    crashed, restarted, lost, control = seen["relay"]
    assert "closed the connection during the request" in crashed["error"]["message"]
    assert restarted["result"]["content"][0]["text"] == "restarted"
    assert "closed the connection during the request" in lost["error"]["message"], lost
    assert control["result"]["isError"] is False


def _asking_policy(proxy: ProxyUnderTest) -> None:
    proxy.policy.write_text(POLICY_TEMPLATE.read_text().replace("TIMEOUT", "30s").replace(
        "rules:\n", "rules:\n  - id: asking-reads\n    match: {server: asking, tool: "
        "[ask_and_wait, wait]}\n    class: read\n", 1))


async def test_a_round_trip_cancelled_by_a_refused_retry_cancels_the_call_upstream(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """A retry of other arguments cancels the round trip's work: on the relay, the relayed
    request, which the upstream hears about as it does on the SDK route."""
    _asking_policy(proxy)
    seen: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        cancel_log = tmp_path / f"cancel-{route}.log"
        async with wire_to(proxy, tmp_path, route, PYTHON, ASKING_SERVER, "--cancel-log",
                           str(cancel_log), name="asking") as wire:
            first = await one(wire, call(1, "ask_and_wait", {}))
            state = first["result"]["requestState"]
            (key,) = first["result"]["inputRequests"]
            answer = {key: {"action": "accept", "content": {"go": True}}}
            refused = await one(wire, retry(2, "ask_and_wait", {"x": 1}, state, answer))
            with anyio.fail_after(30):
                while not cancel_log.exists() or "ask cancelled" not in cancel_log.read_text():
                    await anyio.sleep(0.05)
            # A new call asks again and runs to the end.
            again = (await one(wire, call(3, "ask_and_wait", {})))["result"]
            (key,) = again["inputRequests"]
            answer = {key: {"action": "accept", "content": {"go": True}}}
            final = await one(wire, retry(4, "ask_and_wait", {}, again["requestState"], answer))
            seen[route] = [masked(first), refused, final]
            assert (PROMOTED in log_of(wire)) is (route == "relay")
    assert seen["relay"] == seen["sdk"]
    assert seen["relay"][1]["error"]["code"] == -32602
    assert seen["relay"][2]["result"]["content"][0]["text"] == "answered accept"


async def test_a_client_without_the_capability_is_not_asked_and_no_round_trip_opens(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    tool, args, _, _ = ASKING[0]
    bare = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {}}
    seen: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, *ops(proxy), name="ops") as wire:
            message = call(1, tool, args)
            message["params"]["_meta"] = bare
            seen[route] = await one(wire, message)
            assert PROMOTED not in log_of(wire)
    assert seen["relay"] == seen["sdk"]
    # The upstream hears the proxy's refusal and fails the call with it.
    assert "did not declare the elicitation capability" in \
        seen["relay"]["error"]["message"], seen


async def test_with_several_calls_in_flight_the_latest_is_asked_as_on_the_sdk_route(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """The stdio wire does not say which call an upstream request belongs to: the latest
    call in flight gets it (here the one that asks), and the earlier one is answered as
    usual."""
    _asking_policy(proxy)
    seen: dict[str, list[dict[str, Any]]] = {}
    for route in ROUTES:
        async with wire_to(proxy, tmp_path, route, PYTHON, ASKING_SERVER,
                           name="asking") as wire:
            await one(wire, call(0, "wait", {"seconds": 0}))  # connected and pinned
            await wire.send(call(1, "wait", {"seconds": 3}))
            await anyio.sleep(0.5)  # in flight upstream
            first = await one(wire, call(2, "ask_and_wait", {}))
            (key,) = first["result"]["inputRequests"]
            answer = {key: {"action": "accept", "content": {"go": True}}}
            await wire.send(retry(3, "ask_and_wait", {}, first["result"]["requestState"],
                                  answer))
            answers = sorted(await wire.answers(2), key=lambda a: a["id"])
            seen[route] = [masked(first), *answers]
            if route == "relay":
                log = log_of(wire)
                assert log.count("on the wire") == 3 and log.count(PROMOTED) == 1, log
    assert seen["relay"] == seen["sdk"]
    waited, done = seen["relay"][1:]
    assert waited["id"] == 1 and waited["result"]["content"][0]["text"] == "waited 3.0"
    assert done["id"] == 3 and done["result"]["content"][0]["text"] == "answered accept"
