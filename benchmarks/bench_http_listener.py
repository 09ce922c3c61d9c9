"""Benchmark: the ``--listen`` server's own cost per relayed call, two source trees compared.

``bench_proxy.py`` measures through the official MCP client, whose own CPU (on the same small
VM) drowns a few tens of microseconds. Here a raw HTTP/1.1 client on one keep-alive
connection sends the same 2026-07-28 ``tools/call`` (``get_status``, allowed by the policy,
so relayed) sequentially to the example ops server direct (its SDK app under uvicorn) and
through ``agentguard proxy --listen`` started from each given source tree (e.g. ``main``
with uvicorn serving the ASGI stack, and a branch with the proxy's own listener). Reported
per path: p50 latency, its ratio over direct, and the proxy's CPU (user+system, from
``/proc``) per call. The paths alternate in rounds so machine load falls on all alike.

``--era handshake`` sends the same call as a handshake-era client instead: each connection
first opens a session (``initialize``, ``notifications/initialized``) and the calls name it
(answered as the SDK's event stream). ``--upstream stdio`` has each proxy spawn the ops server
on stdio instead (``--listen`` in front of a stdio upstream; the direct path stays the HTTP
server). ``--concurrency N`` sends the calls on N connections at once (throughput instead of
p50 is compared with direct). ``--profile FILE`` runs the last tree's proxy under
``cProfile`` (written when it exits; the proxy's CPU figure then includes the profiler's).

Run: ``.venv/bin/python benchmarks/bench_http_listener.py --tree main=/work/main
--tree branch=. [--calls 3000] [--rounds 6] [--era 2026|handshake] [--pin 0]
[--profile out.prof]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OPS = str(ROOT / "examples" / "servers" / "ops_server.py")
POLICY = str(ROOT / "examples" / "proxy" / "ops-policy.yaml")
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}
SDK_SEPARATORS = (",", ":")
"""How the SDK's HTTP client separates a body's JSON (httpx's ``json=``): compact, as the proxy's
orjson path reads it (spaced JSON would measure the ``json`` module's fallback instead)."""
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "get_status", "arguments": {"service": "api"}, "_meta": ENVELOPE}},
    separators=SDK_SEPARATORS).encode()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


HANDSHAKE = "2025-11-25"
LEGACY_BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "get_status", "arguments": {"service": "api"}}},
    separators=SDK_SEPARATORS).encode()


def _request(port: int, session: str | None = None, body: bytes | None = None) -> bytes:
    if session is None:
        body = BODY if body is None else body
        head = (f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: "
                "application/json\r\naccept: application/json, text/event-stream\r\n"
                "mcp-protocol-version: 2026-07-28\r\nmcp-method: tools/call\r\n"
                f"mcp-name: get_status\r\ncontent-length: {len(body)}\r\n\r\n")
        return head.encode() + body
    body = LEGACY_BODY if body is None else body
    head = (f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: "
            "application/json\r\naccept: application/json, text/event-stream\r\n"
            + (f"mcp-session-id: {session}\r\nmcp-protocol-version: {HANDSHAKE}\r\n"
               if session else "") + f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer's head and body (``Content-Length`` or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines
                   if line.startswith(b"content-length:")), None)
    if length is not None:
        return head, await reader.readexactly(length)
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        if not size:
            return head, b"".join(parts)
        parts.append(data[:-2])


async def _open_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        port: int) -> str:
    """Open and initialize a handshake-era session on this connection; its id."""
    writer.write(_request(port, "", json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": HANDSHAKE, "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}}).encode()))
    head, _ = await _answer(reader)
    session = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"mcp-session-id:"))
    writer.write(_request(port, session, b'{"jsonrpc": "2.0", '
                                         b'"method": "notifications/initialized"}'))
    head, _ = await _answer(reader)
    assert head.startswith(b"HTTP/1.1 202"), head
    return session


async def _wait(port: int) -> None:
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Path_:
    def __init__(self, name: str, port: int, pid: int | None, era: str) -> None:
        self.name, self.port, self.pid, self.era = name, port, pid, era
        self.lat: list[float] = []
        self.cpu = 0.0
        self.wall = 0.0
        self.calls = 0

    async def round(self, calls: int, concurrency: int = 1) -> None:
        before = _cpu(self.pid) if self.pid else 0.0
        start = time.perf_counter()
        await asyncio.gather(*(self._calls(calls // concurrency) for _ in range(concurrency)))
        self.wall += time.perf_counter() - start
        if self.pid:
            self.cpu += _cpu(self.pid) - before
        self.calls += calls // concurrency * concurrency

    async def _calls(self, calls: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        session = None
        if self.era == "handshake":
            session = await _open_session(reader, writer, self.port)
        raw = _request(self.port, session)
        for _ in range(calls):
            start = time.perf_counter()
            writer.write(raw)
            _, body = await _answer(reader)
            self.lat.append(time.perf_counter() - start)
            assert b'"result"' in body, body
        writer.close()


async def main(trees: list[tuple[str, str]], calls: int, rounds: int, era: str,
               profile: str | None, upstream: str = "http", concurrency: int = 1) -> None:
    home = Path(tempfile.mkdtemp(prefix="agentguard-bench-"))
    up = _port()
    procs = [subprocess.Popen([PY, OPS, "--http", str(up)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    paths = [Path_("direct", up, None, era)]
    try:
        for i, (name, tree) in enumerate(trees):
            pre = ["-m", "cProfile", "-o", profile] if profile and i == len(trees) - 1 else []
            port = _port()
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()),
                   "AGENTGUARD_HOME": str(home / name)}
            proc = subprocess.Popen(
                [PY, *pre, "-m", "agentguard.proxy", "--policy", POLICY, "--store",
                 f"sqlite:///{home / (name + '.db')}", "--audit", str(home / f"{name}.jsonl"),
                 "--name", "ops", "--log-level", "WARNING", "--listen", f"127.0.0.1:{port}",
                 *(["--upstream-url", f"http://127.0.0.1:{up}/mcp"] if upstream == "http"
                   else ["--", PY, OPS])],
                # ``-m`` puts the working directory first on sys.path: run from the tree.
                cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            paths.append(Path_(name, port, proc.pid, era))
        for p in paths:
            await _wait(p.port)
            await p.round(200)  # warm up
            p.lat.clear()
            p.cpu, p.wall, p.calls = 0.0, 0.0, 0
        for r in range(rounds):
            for p in paths[r % len(paths):] + paths[:r % len(paths)]:
                await p.round(calls // rounds, concurrency)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    how = "sequential" if concurrency == 1 else f"{concurrency} in flight"
    print(f"{os.cpu_count()} CPUs, load average {load}; {calls} {how} {era} calls per path "
          f"({upstream} upstream)")
    direct = statistics.median(paths[0].lat)
    direct_rate = paths[0].calls / paths[0].wall
    print(f"{'path':<12}{'p50 ms':>9}{'p50/direct':>12}{'calls/s':>9}{'of direct':>11}"
          f"{'proxy CPU ms/call':>19}")
    for p in paths:
        p50, rate = statistics.median(p.lat), p.calls / p.wall
        cpu = f"{p.cpu * 1000 / p.calls:>19.3f}" if p.pid else f"{'':>19}"
        print(f"{p.name:<12}{p50 * 1000:>9.3f}{p50 / direct:>11.2f}x{rate:>9.0f}"
              f"{rate / direct_rate:>10.0%}{cpu}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a source tree whose agentguard serves the proxy (repeatable)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--era", choices=("2026", "handshake"), default="2026",
                        help="the client's protocol era (handshake: calls in a session)")
    parser.add_argument("--upstream", choices=("http", "stdio"), default="http",
                        help="the proxies' upstream: the HTTP server, or the same on stdio")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="connections sending calls at once")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the last tree's proxy under cProfile, written at its exit")
    parser.add_argument("--pin", type=int, metavar="CPU",
                        help="run every process on this CPU (isolates the proxy's own cost)")
    ns = parser.parse_args()
    if ns.pin is not None:
        os.sched_setaffinity(0, {ns.pin})
    trees = [tuple(t.split("=", 1)) for t in ns.tree]
    asyncio.run(main([(n, p) for n, p in trees], ns.calls, ns.rounds, ns.era, ns.profile,
                     ns.upstream, ns.concurrency))
