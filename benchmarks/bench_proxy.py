"""Benchmark: an allowed ``tools/call`` direct to the upstream vs through ``agentguard proxy``.

Measured in one run, against the example ops server (``get_status``, allowed by the policy),
for stdio (client -> [proxy ->] stdio upstream) and Streamable HTTP (client -> [proxy
--listen ->] HTTP upstream), with a bare byte-for-byte relay in the proxy's place as a
reference (``benchmarks/bare_relay.py``: what one more process in the path costs by itself):

- latency: sequential calls, p50 and p99 (and sequential calls/s);
- throughput: calls/s with ``--concurrency`` calls in flight;
- CPU: user+system time of the proxy (and of the bare relay) per call, read from ``/proc``
  over every call of the measurement (Linux).

The six paths are measured in alternating rounds, so load from elsewhere on the machine falls
on all of them alike. Ratios are against the direct baseline of the same run; the target is
p50 within 1.2x of direct and throughput at least 80% of direct.

``--pin CPU`` runs the client, the proxies and the upstreams on one CPU. On a small VM a
hop that wakes a process on the other, idle vCPU costs tens of microseconds of wake-up
latency that has nothing to do with the code; pinning measures what the proxy itself adds.
Run both ways and quote both.

Latency is measured in a phase of its own (sequential calls, the paths alternating, each round
starting one path later so no path always follows the same one), then throughput (the same
alternation). ``--mixed`` puts each path's throughput burst right after its latency segment
instead, as this benchmark did before 2026-11-28. On the 2-core VM that slows the sequential
calls that follow a 16-wide burst on every path of three processes: the bare relay alone
measured 1.11-1.20x direct mixed, 0.99-1.14x split.

A call that fails is retried once and counted; the counts are printed.

``--upstream-mode legacy`` has the proxies speak the handshake era to the upstream whatever
the client's era (``--mode auto`` then measures a 2026-07-28 client in front of a
handshake-era server, as most published servers are today).

Run: ``.venv/bin/python benchmarks/bench_proxy.py [--calls 2000] [--mode auto|legacy]
[--upstream-mode auto|legacy|2026-07-28] [--pin 0]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OPS = str(ROOT / "examples" / "servers" / "ops_server.py")
POLICY = str(ROOT / "examples" / "proxy" / "ops-policy.yaml")
RELAY = str(ROOT / "benchmarks" / "bare_relay.py")


@dataclass
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    seq_per_s: float
    conc_per_s: float
    retried: int = 0
    cpu_ms: float | None = None  # CPU of the middle process per call (proxy, relay)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_port(port: int) -> None:
    with anyio.fail_after(60):
        while True:
            try:
                await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                return
            except OSError:
                await anyio.sleep(0.05)


@asynccontextmanager
async def _process(argv: list[str], env: dict[str, str], port: int) -> AsyncIterator[int]:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _wait_port(port)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


FAILURES: dict[int, int] = {}
CALLS: dict[int, int] = {}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(marker: str, skip: set[int]) -> int | None:
    """The pid of this process's child (not in ``skip``) whose command line has ``marker``."""
    me = Path(f"/proc/{os.getpid()}/task")
    for task in me.iterdir():
        for pid in map(int, (task / "children").read_text().split()):
            if pid not in skip and marker in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
    return None


async def _one(client: Client) -> None:
    CALLS[id(client)] = CALLS.get(id(client), 0) + 1
    for attempt in (1, 2):
        try:
            result = await client.call_tool("get_status", {"service": "api"})
        except Exception:
            if attempt == 2:
                raise
            FAILURES[id(client)] = FAILURES.get(id(client), 0) + 1
            continue
        assert not result.is_error, result
        return


async def _concurrent(client: Client, calls: int, width: int) -> float:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(client)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(worker)
    return calls / (time.perf_counter() - start)


async def _measure(clients: dict[str, Client], calls: int, concurrency: int,
                   rounds: int, middle: dict[str, int], mixed: bool) -> list[Result]:
    """Interleave the paths round by round, so a load change on the machine hits all.

    Latency rounds come first, then throughput rounds; ``mixed`` runs each path's throughput
    burst right after its latency segment instead (the schedule before 2026-11-28), so every
    latency segment follows a 16-wide burst. ``middle`` maps a path to the pid of its middle
    process, whose CPU per call is reported.
    """
    lat: dict[str, list[float]] = {name: [] for name in clients}
    busy: dict[str, float] = dict.fromkeys(clients, 0.0)
    conc: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():
        for _ in range(100):  # warm up both ends
            await _one(client)
    per_round = max(1, calls // rounds)
    cpu_before = {name: _cpu_seconds(pid) for name, pid in middle.items()}
    calls_before = {name: CALLS[id(client)] for name, client in clients.items()}

    async def latency(name: str, client: Client) -> None:
        start = time.perf_counter()
        for _ in range(per_round):
            t0 = time.perf_counter()
            await _one(client)
            lat[name].append(time.perf_counter() - t0)
        busy[name] += time.perf_counter() - start

    paths = list(clients.items())

    def order(round_: int) -> list[tuple[str, Client]]:
        """Each round starts one path later: what runs before a path (and so what state the
        machine is in when it starts) changes from round to round, alike for all paths."""
        shift = round_ % len(paths)
        return paths[shift:] + paths[:shift]

    if mixed:
        for round_ in range(rounds):
            for name, client in order(round_):
                await latency(name, client)
                conc[name].append(await _concurrent(client, per_round, concurrency))
                # A mixed round lasts about a server's keep-alive timeout (uvicorn: 5 s), and
                # a request racing the server's close of an idle connection kills the SDK
                # client; an unmeasured burst on every path keeps no connection that idle.
                for other in clients.values():
                    await _concurrent(other, concurrency, concurrency)
    else:
        # A round of either phase is well under 5 s, so no connection idles into a
        # server's keep-alive timeout.
        for round_ in range(rounds):
            for name, client in order(round_):
                await latency(name, client)
        for round_ in range(rounds):
            for name, client in order(round_):
                conc[name].append(await _concurrent(client, per_round, concurrency))
    out = []
    for name, client in clients.items():
        values = sorted(lat[name])
        cpu = None
        if name in middle:
            made = CALLS[id(client)] - calls_before[name]
            cpu = (_cpu_seconds(middle[name]) - cpu_before[name]) * 1000 / made
        out.append(Result(name, statistics.median(values) * 1000,
                          values[max(0, int(len(values) * 0.99) - 1)] * 1000,
                          len(values) / busy[name], statistics.median(conc[name]),
                          FAILURES.get(id(client), 0), cpu))
    return out


def _proxy_args(home: Path, *extra: str) -> list[str]:
    return ["-m", "agentguard.proxy", "--policy", POLICY, "--store",
            f"sqlite:///{home / 'bench.db'}", "--audit", str(home / "audit.jsonl"),
            "--name", "ops", "--log-level", "WARNING", *extra]


async def main(calls: int, mode: str, concurrency: int, rounds: int, mixed: bool,
               upstream_mode: str | None = None) -> list[Result]:
    home = Path(tempfile.mkdtemp(prefix="agentguard-bench-"))
    env = {**os.environ, "AGENTGUARD_HOME": str(home)}
    up, px, relay = _port(), _port(), _port()
    url = f"http://127.0.0.1:{up}/mcp"
    era = ("--upstream-mode", upstream_mode) if upstream_mode else ()
    targets: dict[str, StdioServerParameters | str] = {
        "stdio direct": StdioServerParameters(command=PY, args=[OPS], env=env),
        "stdio bare relay": StdioServerParameters(command=PY,
                                                  args=[RELAY, "stdio", "--", PY, OPS],
                                                  env=env),
        "stdio via proxy": StdioServerParameters(command=PY,
                                                 args=_proxy_args(home, *era, "--", PY, OPS),
                                                 env=env),
        "http direct": url,
        "http bare relay": f"http://127.0.0.1:{relay}/mcp",
        "http via proxy": f"http://127.0.0.1:{px}/mcp",
    }
    proxy_http = [PY, *_proxy_args(home, *era, "--upstream-url", url, "--listen",
                                   f"127.0.0.1:{px}")]
    async with _process([PY, OPS, "--http", str(up)], env, up), \
            _process(proxy_http, env, px) as proxy_pid, \
            _process([PY, RELAY, "tcp", str(relay), str(up)], env, relay) as relay_pid, \
            AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(Client(t, mode=mode, cache=None))
                   for name, t in targets.items()}
        middle = {"http via proxy": proxy_pid, "http bare relay": relay_pid}
        for name, marker in (("stdio via proxy", "agentguard.proxy"),
                             ("stdio bare relay", "bare_relay.py")):
            pid = _child(marker, {proxy_pid, relay_pid})
            if pid is not None:
                middle[name] = pid
        return await _measure(clients, calls, concurrency, rounds, middle, mixed)


def report(results: list[Result], concurrency: int, pin: int | None) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    where = f"all pinned to CPU {pin}" if pin is not None else "client, proxy and upstream " \
        "share them"
    print(f"{os.cpu_count()} CPUs, load average {load} ({where})")
    print(f"{'path':<18}{'p50 ms':>9}{'p99 ms':>9}{'seq calls/s':>13}"
          f"{f'calls/s @{concurrency}':>15}{'CPU ms/call':>13}")
    for r in results:
        cpu = f"{r.cpu_ms:>13.3f}" if r.cpu_ms is not None else f"{'':>13}"
        print(f"{r.name:<18}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.seq_per_s:>13.0f}"
              f"{r.conc_per_s:>15.0f}{cpu}" + (f"   ({r.retried} retried)" if r.retried else ""))
    print()
    for transport in ("stdio", "http"):
        d = next(r for r in results if r.name == f"{transport} direct")
        b = next(r for r in results if r.name == f"{transport} bare relay")
        p = next(r for r in results if r.name == f"{transport} via proxy")
        lat, seq, conc = p.p50_ms / d.p50_ms, p.seq_per_s / d.seq_per_s, \
            p.conc_per_s / d.conc_per_s
        print(f"{transport}: p50 ratio {lat:.2f}x (target <= 1.20x), p99 ratio "
              f"{p.p99_ms / d.p99_ms:.2f}x, sequential throughput {seq:.0%}, throughput "
              f"@{concurrency} {conc:.0%} of direct (target >= 80%)")
        print(f"{'':<{len(transport) + 2}}a bare relay (one more process, no logic): p50 "
              f"{b.p50_ms / d.p50_ms:.2f}x, throughput @{concurrency} "
              f"{b.conc_per_s / d.conc_per_s:.0%}; the proxy adds "
              f"{(p.p50_ms - b.p50_ms) * 1000:.0f} us over it at p50")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    parser.add_argument("--upstream-mode", choices=["auto", "legacy", "2026-07-28"],
                        help="the era the proxies speak to the upstream (default: theirs)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=12,
                        help="alternate the paths this many times (evens out machine load)")
    parser.add_argument("--mixed", action="store_true",
                        help="run each path's throughput burst right after its latency segment "
                             "(the schedule before 2026-11-28) instead of in a phase of its own")
    parser.add_argument("--pin", type=int, metavar="CPU",
                        help="run every process on this CPU (isolates the proxy's own cost)")
    ns = parser.parse_args()
    if ns.pin is not None:
        os.sched_setaffinity(0, {ns.pin})  # inherited by every process started below
    report(anyio.run(main, ns.calls, ns.mode, ns.concurrency, ns.rounds, ns.mixed,
                     ns.upstream_mode),
           ns.concurrency, ns.pin)
