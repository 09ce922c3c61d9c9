"""Several messages per read on the stdio relay, over real pipes and processes.

The proxy reads whatever is in a pipe at once: several requests the client wrote together,
several answers the upstream wrote together. Each relayable call is relayed from the read
callback, everything else still reaches the server in order, and the answers reach the
client whole, once each, even when the client does not read for a while.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

COALESCE = str(Path(__file__).with_name("servers") / "coalesce.py")
RELAYED = "relayed tools/call"


def call(rid: int, service: str = "api", **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "get_status", "arguments": {"service": service}, **params}}


class Wire:
    """The client's side of a proxy process, spoken raw."""

    def __init__(self, proc: Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.buf = bytearray()

    async def send(self, *messages: dict[str, Any] | bytes) -> None:
        """All ``messages`` in one write."""
        assert self.proc.stdin is not None
        data = b"".join((m if isinstance(m, bytes) else json.dumps(m).encode()) + b"\n"
                        for m in messages)
        await self.proc.stdin.send(data)

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with anyio.fail_after(30):
            while b"\n" not in self.buf:
                self.buf.extend(await self.proc.stdout.receive())
        raw, _, rest = bytes(self.buf).partition(b"\n")
        self.buf[:] = rest
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    async def answers(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` responses (notifications skipped), in arrival order."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            message = await self.receive()
            if "id" in message:
                out.append(message)
        return out

    def relayed(self) -> int:
        return self.log.read_text().count(RELAYED)


async def open_wire(proxy: ProxyUnderTest, tmp_path: Path, *shim: str) -> tuple[Process, Wire]:
    upstream = [PYTHON, OPS_SERVER, "--root", str(proxy.sandbox)]
    if shim:
        upstream = [PYTHON, COALESCE, *shim, "--", *upstream]
    args = proxy.args(*upstream, name="ops", extra=("--log-level", "DEBUG"))
    log = tmp_path / "proxy.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        proc = await anyio.open_process([PYTHON, *args], env=proxy.env(), stderr=fd)
    finally:
        os.close(fd)  # the child has its own copy
    wire = Wire(proc, log)
    await wire.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}})
    assert (await wire.receive())["result"]["serverInfo"]["name"] == "agentguard-proxy"
    await wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    # The first call shows the relay is on (it needs the upstream connected and pinned).
    await wire.send(call(1))
    (first,) = await wire.answers(1)
    assert first["id"] == 1 and not first["result"]["isError"], first
    assert wire.relayed() == 1
    return proc, wire


async def close_wire(proc: Process) -> None:
    assert proc.stdin is not None
    await proc.stdin.aclose()
    with anyio.fail_after(20):
        assert await proc.wait() == 0


def ok(answer: dict[str, Any]) -> str:
    result = answer["result"]
    assert result["isError"] is False, answer
    text = result["content"][0]["text"]
    assert isinstance(text, str)
    return text


async def test_requests_written_together_are_all_relayed(proxy: ProxyUnderTest,
                                                         tmp_path: Path) -> None:
    proc, wire = await open_wire(proxy, tmp_path)
    async with proc:
        services = ["api", "billing", "search", "api"] * 2
        await wire.send(*(call(10 + i, service) for i, service in enumerate(services)))
        answers = await wire.answers(8)
        assert sorted(a["id"] for a in answers) == list(range(10, 18))
        for answer in answers:
            assert ok(answer).startswith(services[answer["id"] - 10])
        assert wire.relayed() == 9
        await close_wire(proc)


async def test_a_message_the_relay_leaves_amid_a_batch_keeps_its_place(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    proc, wire = await open_wire(proxy, tmp_path)
    async with proc:
        # 20 is relayed, then cancelled in the same read: it is never answered. The ping, the
        # call with a progress token (the SDK route), the bad line and the calls after them
        # are all answered.
        await wire.send(call(20), {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                   "params": {"requestId": 20}},
                        call(21), {"jsonrpc": "2.0", "id": 22, "method": "ping"},
                        call(23, _meta={"progressToken": "p"}), b"{not json", call(24),
                        call(25))
        answers = {a["id"]: a for a in await wire.answers(6)}
        assert set(answers) == {21, 22, 23, 24, 25, None}
        assert answers[22]["result"] == {}
        assert answers[None]["error"]["code"] == -32700
        for rid in (21, 23, 24, 25):
            assert ok(answers[rid]).startswith("api: running")
        assert wire.relayed() == 1 + 4  # 20, 21, 24, 25 (not the one with a progress token)
        await wire.send(call(26))
        (last,) = await wire.answers(1)
        assert last["id"] == 26  # 20's answer was dropped, not delayed
        await close_wire(proc)


async def test_answers_read_together_reach_the_client_each_once(proxy: ProxyUnderTest,
                                                                tmp_path: Path) -> None:
    proc, wire = await open_wire(proxy, tmp_path, "--wait", "0.2")
    async with proc:
        for round_ in range(3):
            ids = list(range(100 * (round_ + 1), 100 * (round_ + 1) + 8))
            await wire.send(*(call(rid) for rid in ids))
            answers = await wire.answers(8)
            assert sorted(a["id"] for a in answers) == ids
            for answer in answers:
                assert ok(answer).startswith("api: running")
        assert wire.relayed() == 1 + 24
        await close_wire(proc)


async def test_an_upstream_that_dies_mid_batch_fails_only_what_it_did_not_answer(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    proc, wire = await open_wire(proxy, tmp_path, "--wait", "0.3", "--crash-marker",
                                 str(marker))
    async with proc:
        await wire.send(*(call(rid) for rid in range(30, 38)))
        answers = await wire.answers(8)
        assert marker.exists()
        assert sorted(a["id"] for a in answers) == list(range(30, 38))
        answered = [a for a in answers if "result" in a]
        lost = [a for a in answers if "error" in a]
        assert len(answered) == 2, answers  # the whole lines before the crash
        for answer in answered:
            assert ok(answer).startswith("api: running")
        for answer in lost:
            assert answer["error"]["code"] == -32603
            assert "ops" in answer["error"]["message"]
        # The proxy restarts the upstream; calls work again.
        await wire.send(call(40), call(41))
        answers = await wire.answers(2)
        assert sorted(a["id"] for a in answers) == [40, 41]
        for answer in answers:
            assert ok(answer).startswith("api: running")
        await close_wire(proc)


async def test_a_client_that_does_not_read_gets_every_answer_whole_in_the_end(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    proc, wire = await open_wire(proxy, tmp_path)
    async with proc:
        # Long answers, so the client's pipe fills well before the proxy is done.
        ids = list(range(1000, 1400))
        service = "x" * 2000  # an unknown service: the error echoes its name
        async with anyio.create_task_group() as tg:
            async def write() -> None:
                for start in range(0, len(ids), 50):
                    await wire.send(*(call(rid, service) for rid in ids[start:start + 50]))

            tg.start_soon(write)
            await anyio.sleep(1.5)  # not reading: the proxy's writes to the client block
        answers = await wire.answers(len(ids))
        assert sorted(a["id"] for a in answers) == ids
        for answer in answers:
            assert service in answer["error"]["message"], answer
        await wire.send(call(2000))
        (last,) = await wire.answers(1)
        assert ok(last).startswith("api: running")
        await close_wire(proc)
