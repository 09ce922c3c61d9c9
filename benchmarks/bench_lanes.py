"""Benchmark: why the proxy's relay owns two small pieces of byte work instead of a library's.

The relay carries an allowed ``tools/call`` to its upstream. Two of its parts are written here
rather than taken from a library, and this benchmark is what justifies each, measured in one
run against the library that would otherwise do the job:

- **HTTP/1.1 POSTs** (:class:`agentguard.proxy.http1.Http1Pool`) against ``httpx2.AsyncClient``
  (what the MCP SDK's Streamable HTTP client uses), both posting the same JSON-RPC body to the
  same keep-alive server, in a subprocess;
- **the stdio lane** (answers read in a pipe protocol's callback, one line per message) against
  the SDK's ``stdio_client`` transport (a reader task and a writer task, pydantic
  ``SessionMessage`` validation both ways), both round-tripping the same line through the same
  echo subprocess.

Printed per pair: the client process's CPU per round trip (``time.process_time``: what the
proxy itself spends) and the wall p50, with the ratio library/ours. Rounds alternate so load
from elsewhere falls on both alike; quote ranges over several runs.

Run: ``.venv/bin/python benchmarks/bench_lanes.py [--calls 2000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import httpx2
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCRequest

from agentguard.proxy.http1 import Http1Pool

BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "hello"}}}).encode()
ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}'

HTTP_SERVER = r"""
import asyncio, sys
ANSWER = sys.argv[1].encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + \
    str(len(ANSWER)).encode() + b"\r\n\r\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0: return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n: return
            self.buf = self.buf[end + 4 + n:]
            self.t.write(HEAD + ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

ECHO_SERVER = r"""
import sys
ANSWER = sys.argv[1].encode()
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    out.write(ANSWER + b"\n"); out.flush()
"""


class _Sink:
    """An :class:`~agentguard.proxy.http1.ResponseSink` completing a future."""

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future
        self.chunks: list[bytes] = []

    def started(self, status: int, headers: dict[str, str]) -> None:
        pass

    def body(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finished(self) -> None:
        self.future.set_result(b"".join(self.chunks))

    def failed(self, error: BaseException, sent: bool) -> None:
        self.future.set_exception(error)


async def _measure(one: Callable[[], Awaitable[None]], calls: int) -> tuple[float, float]:
    """(CPU µs per call, wall p50 µs) over ``calls`` sequential round trips."""
    for _ in range(min(200, calls)):
        await one()
    laps: list[float] = []
    cpu = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await one()
        laps.append(time.perf_counter() - start)
    return (time.process_time() - cpu) / calls * 1e6, statistics.median(laps) * 1e6


async def http_pair(calls: int) -> dict[str, tuple[float, float]]:
    server = subprocess.Popen([sys.executable, "-c", HTTP_SERVER, ANSWER.decode()],
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        loop = asyncio.get_running_loop()
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        tasks: set[asyncio.Task[None]] = set()

        def spawn(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
            task = loop.create_task(make())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        pool = Http1Pool("127.0.0.1", port, "/mcp", headers, spawn=spawn)

        async def ours() -> None:
            future: asyncio.Future[bytes] = loop.create_future()
            pool.post(BODY, {}, _Sink(future))
            assert await future == ANSWER

        async with httpx2.AsyncClient(headers=headers) as client:
            url = f"http://127.0.0.1:{port}/mcp"

            async def library() -> None:
                response = await client.post(url, content=BODY)
                assert response.content == ANSWER

            return {"Http1Pool": await _measure(ours, calls),
                    "httpx2.AsyncClient": await _measure(library, calls)}
    finally:
        server.kill()
        server.wait()


class _Lines(asyncio.SubprocessProtocol):
    """Lines from the child's stdout, each completing the oldest waiting future."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[bytes]] = []
        self.buffer = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
            self.waiting.pop(0).set_result(line)


async def stdio_pair(calls: int) -> dict[str, tuple[float, float]]:
    loop = asyncio.get_running_loop()
    transport, lines = await loop.subprocess_exec(_Lines, sys.executable, "-c", ECHO_SERVER,
                                                    ANSWER.decode())
    try:
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)

        async def ours() -> None:
            future: asyncio.Future[bytes] = loop.create_future()
            lines.waiting.append(future)
            stdin.write(BODY + b"\n")
            assert await future == ANSWER

        result = {"pipe protocol (ours)": await _measure(ours, calls)}
    finally:
        transport.close()
    params = StdioServerParameters(command=sys.executable,
                                   args=["-c", ECHO_SERVER, ANSWER.decode()])
    request = SessionMessage(JSONRPCRequest.model_validate_json(BODY))
    async with stdio_client(params) as (read, write):
        async def library() -> None:
            await write.send(request)
            answer = await read.receive()
            assert isinstance(answer, SessionMessage)

        result["mcp stdio_client"] = await _measure(library, calls)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="round trips per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    found: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for pair in (http_pair, stdio_pair):
            for name, figures in anyio.run(pair, args.calls).items():
                found.setdefault(name, []).append(figures)
    print(f"{args.calls} sequential round trips x {args.rounds} rounds "
          "(client process CPU per round trip; wall p50)")
    for ours, library in (("Http1Pool", "httpx2.AsyncClient"),
                          ("pipe protocol (ours)", "mcp stdio_client")):
        for name in (ours, library):
            cpu = [c for c, _ in found[name]]
            p50 = [w for _, w in found[name]]
            print(f"  {name:22} CPU {min(cpu):7.1f}-{max(cpu):7.1f} us   "
                  f"p50 {min(p50):7.1f}-{max(p50):7.1f} us")
        ratios = [lib[0] / own[0] for own, lib in zip(found[ours], found[library], strict=True)]
        print(f"  -> {library} costs {min(ratios):.1f}-{max(ratios):.1f}x the CPU of {ours}")


if __name__ == "__main__":
    main()
