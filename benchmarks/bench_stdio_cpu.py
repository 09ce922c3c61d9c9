"""Benchmark: the stdio proxy's own CPU per allowed ``tools/call`` (and the upstream's).

A focused companion to ``bench_proxy.py``: one SDK client makes sequential allowed calls
(``get_status`` of the example ops server) through ``agentguard proxy`` over stdio (or
``--concurrency N`` calls in flight, where several messages share one read), and the
CPU time of the proxy process and of its upstream per call is read from
``/proc/PID/task/*/schedstat`` (Linux; nanoseconds, where ``stat`` counts 10 ms ticks).
``--profile FILE`` runs the proxy under ``cProfile`` (written at exit) to see where its time
goes; profiling slows it, so read the CPU figures from a run without it. ``--wrap`` runs it
under another command (``strace -c -o FILE`` counts its system calls).

Run: ``python benchmarks/bench_stdio_cpu.py [--calls 3000] [--mode auto|legacy]
[--upstream-mode auto|legacy] [--concurrency 8] [--runs 3] [--pin 0] [--profile out.prof]``

With ``--concurrency`` the latency column is replaced by throughput (calls/s) against the
direct path's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OPS = str(ROOT / "examples" / "servers" / "ops_server.py")
POLICY = str(ROOT / "examples" / "proxy" / "ops-policy.yaml")


WRAP: list[str] = []


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads, in nanoseconds' precision (``schedstat``; Linux)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            out += [child, *_descendants(child)]
    return out


def _find(first: str, marker: str) -> int | None:
    """The descendant whose argv[0] is ``first`` and whose argv contains ``marker``."""
    for pid in _descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if argv[0] == first and any(a.endswith(marker) for a in argv) and \
                ("agentguard.proxy" in argv) == (marker == "agentguard.proxy"):
            return pid
    return None


async def _in_flight(client: Client, calls: int, width: int) -> float:
    """Make ``calls`` calls with ``width`` in flight; returns calls/s."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result = await client.call_tool("get_status", {"service": "api"})
            assert not result.is_error, result

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(worker)
    return calls / (time.perf_counter() - start)


async def run(calls: int, mode: str, upstream_mode: str | None, profile: str | None,
              direct: bool, concurrency: int = 1) -> tuple[float, float | None, float]:
    """One run: (p50 ms, or calls/s with ``concurrency`` > 1; proxy CPU ms/call or None when
    direct; upstream CPU ms/call)."""
    home = Path(tempfile.mkdtemp(prefix="agentguard-bench-"))
    env = {**os.environ, "AGENTGUARD_HOME": str(home)}
    if direct:
        params = StdioServerParameters(command=PY, args=[OPS], env=env)
    else:
        pre = ["-m", "cProfile", "-o", profile] if profile else []
        args = [*pre, "-m", "agentguard.proxy", "--policy", POLICY, "--store",
                f"sqlite:///{home / 'bench.db'}", "--audit", str(home / "audit.jsonl"),
                "--name", "ops", "--log-level", "WARNING"]
        if upstream_mode:
            args += ["--upstream-mode", upstream_mode]
        argv = [*WRAP, PY, *args, "--", PY, OPS]
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    async with Client(params, mode=mode, cache=None) as client:
        for _ in range(200):
            await client.call_tool("get_status", {"service": "api"})
        proxy = None if direct else _find(PY, "agentguard.proxy")
        upstream = _find(PY, "ops_server.py")
        assert upstream is not None
        before = (_cpu_seconds(proxy) if proxy else 0.0, _cpu_seconds(upstream))
        lat = []
        if concurrency > 1:
            rate = await _in_flight(client, calls, concurrency)
        for _ in range(calls if concurrency <= 1 else 0):
            t0 = time.perf_counter()
            result = await client.call_tool("get_status", {"service": "api"})
            lat.append(time.perf_counter() - t0)
            assert not result.is_error, result
        after = (_cpu_seconds(proxy) if proxy else 0.0, _cpu_seconds(upstream))
    return (rate if concurrency > 1 else statistics.median(lat) * 1000,
            None if direct else (after[0] - before[0]) * 1000 / calls,
            (after[1] - before[1]) * 1000 / calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    parser.add_argument("--upstream-mode", default=None)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="calls in flight (1: sequential calls, latency reported)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pin", type=int, metavar="CPU")
    parser.add_argument("--profile", metavar="FILE", help="run the proxy under cProfile")
    parser.add_argument("--wrap", default="", help="a command prefix for the proxy "
                        "(e.g. 'strace -c -o FILE'), split on spaces")
    ns = parser.parse_args()
    WRAP[:] = ns.wrap.split()
    if ns.pin is not None:
        os.sched_setaffinity(0, {ns.pin})
    for i in range(ns.runs):
        width = ns.concurrency
        d50, _, dup = anyio.run(run, ns.calls, ns.mode, None, None, True, width)
        p50, cpu, up = anyio.run(run, ns.calls, ns.mode, ns.upstream_mode, ns.profile, False,
                                 width)
        head = (f"run {i + 1}: mode {ns.mode} upstream-mode {ns.upstream_mode or 'default'}: "
                f"proxy CPU {cpu:.3f} ms/call, upstream CPU {up:.3f} (direct {dup:.3f}) "
                f"ms/call, ")
        if width > 1:
            print(head + f"{p50:.0f} calls/s @{width} vs direct {d50:.0f} = "
                  f"{p50 / d50:.0%}", flush=True)
        else:
            print(head + f"p50 {p50:.3f} ms vs direct {d50:.3f} ms = {p50 / d50:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
