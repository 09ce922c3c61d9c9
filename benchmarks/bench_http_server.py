"""Benchmark: the HTTP server's own CPU per request, uvicorn+ASGI against the proxy's listener.

The same small JSON answer (the size of a relayed ``tools/call`` result) to the same
keep-alive ``POST /mcp``, served on uvloop by:

- ``bare``: an httptools protocol writing a fixed answer (the floor: parsing, syscalls);
- ``uvicorn``: uvicorn (httptools) running a minimal ASGI app — what ``--listen`` cost
  before the proxy had its own listener, before any proxy logic;
- ``listener-asgi``: :class:`~agentguard.proxy.http_listener.Listener` running the same app
  through :mod:`agentguard.proxy.asgi_bridge` (the route of every request the relay declines);
- ``listener-direct``: the listener's direct route (:class:`DirectRelay` in front of a relay
  stub whose upstream answers on the next loop turn: planning and shaping cost nothing here).

A raw client sends sequential requests; the server process's user+system CPU (``/proc``) per
request is reported. Run: ``.venv/bin/python benchmarks/bench_http_server.py [--calls 20000]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"api: running"}]' \
         b',"isError":false}}'
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_status"}}'
HEADERS = [(b"content-type", b"application/json"),
           (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


class _InstantPlan:
    """A relayed call whose upstream answers at once (the next loop turn)."""

    def relay(self, params: Any, on_answer: Any) -> str:
        on_answer({"result": {"content": [{"type": "text", "text": "api: running"}],
                              "isError": False}})
        return "1"

    def abandon(self, sent: str) -> None:
        pass


class _InstantFast:
    """The relay's interface with nothing behind it: every POST is planned and answered."""

    window = None

    def plan(self, scope: Any, value: Any) -> _InstantPlan:
        return _InstantPlan()

    def reply(self, plan: Any, rid: Any, answer: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"jsonrpc": "2.0", "id": rid, "result": answer["result"]}


class _Bare(asyncio.Protocol):
    """The floor: httptools parsing, one fixed answer written at message end."""

    def connection_made(self, transport: Any) -> None:
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%b" % (len(ANSWER), ANSWER))


async def serve(kind: str, port: int) -> None:
    if kind == "uvicorn":
        import uvicorn

        await uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning",
                                            http="httptools", lifespan="off")).serve()
        return
    if kind == "bare":
        await asyncio.get_running_loop().create_server(_Bare, "127.0.0.1", port)
        await asyncio.Event().wait()
    from agentguard.proxy.http_listener import DirectRelay, Listener

    relay = DirectRelay(_InstantFast(), app, max_depth=64) if kind == "listener-direct" \
        else None
    await Listener(app, relay=relay).start("127.0.0.1", port)
    await asyncio.Event().wait()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(kind: str, calls: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)],
                            cwd=ROOT)
    try:
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        raw = (b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%b" % (len(BODY), BODY))
        async def one() -> None:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            start = head.index(b"content-length: ") + 16
            await reader.readexactly(int(head[start:head.index(b"\r\n", start)]))

        for _ in range(500):
            await one()
        before = _cpu(proc.pid)
        start = time.perf_counter()
        for _ in range(calls):
            await one()
        wall = time.perf_counter() - start
        cpu = _cpu(proc.pid) - before
        writer.close()
        print(f"{kind:<16}{cpu * 1e6 / calls:>10.1f} µs CPU/request{wall * 1e6 / calls:>10.1f}"
              " µs round trip")
        return cpu / calls
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    import uvloop

    if ns.serve:
        uvloop.run(serve(ns.serve, ns.port))
    else:
        for kind in ("bare", "uvicorn", "listener-asgi", "listener-direct") * 2:
            asyncio.run(client(kind, ns.calls))
