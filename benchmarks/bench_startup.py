"""Benchmark: start-up and memory of ``agentguard proxy`` (stdio) against the upstream alone.

Start-up is what a client waits for: the time from spawning the server (the upstream itself,
or the proxy in front of it) to the answer of the client's first message, as the neutral
harness (``../shared/bench/mcp_latency.py``) measures it. Both eras, with the official SDK
client: ``legacy`` sends ``initialize`` (protocol 2025-11-25) and ``notifications/initialized``;
``auto`` sends ``server/discover`` at 2026-07-28.

Memory is the proxy process's own (not its upstream's): RSS after one allowed call, and its
peak (``VmHWM``), from psutil where installed, else ``/proc`` (Linux).

Each round runs the upstream alone and the proxy in both eras, the order alternating from round
to round so that load elsewhere on the machine falls on every path alike. Figures are medians
over rounds; the difference and the ratio are the medians of the per-round ones (the upstream
alone and the proxy of the same round). Targets (issue 18): at most 250 ms over the upstream
alone, and under 60 MB.

Both processes run from bytecode caches, as an installed package does: the children write
theirs under a private ``PYTHONPYCACHEPREFIX`` even where ``PYTHONDONTWRITEBYTECODE`` is set.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--rounds 8] [--entry module|cli]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OPS = str(ROOT / "examples" / "servers" / "ops_server.py")
POLICY = str(ROOT / "examples" / "proxy" / "ops-policy.yaml")
ERAS = ("legacy", "auto")
ERA_NAMES = {"legacy": "initialize 2025-11-25", "auto": "server/discover 2026-07-28"}


@dataclass
class Samples:
    start_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    hwm_mb: list[float] = field(default_factory=list)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += map(int, (task / "children").read_text().split())
    return out


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of one process in MB: psutil where installed, else /proc."""
    try:
        import psutil
    except ImportError:
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)
    info = psutil.Process(pid).memory_info()
    # psutil names the peak only on some platforms; on Linux it is VmHWM.
    peak = getattr(info, "peak_wset", None) or _vmhwm(pid)
    return info.rss / 2**20, peak / 2**20


def _vmhwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return float("nan")


def _cpu_ms(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def _one(params: StdioServerParameters, mode: str) -> tuple[float, float, float, float]:
    """Spawn and connect (the client's first message answered): the time it took and the CPU
    the spawned process had used by then; then one allowed call and its memory."""
    before = set(_children(os.getpid()))
    with open(os.devnull, "w") as errlog:
        start = time.perf_counter()
        async with Client(stdio_client(params, errlog=errlog), mode=mode, cache=None) as client:
            elapsed = (time.perf_counter() - start) * 1000
            pid = next(p for p in _children(os.getpid()) if p not in before)
            cpu = _cpu_ms(pid)
            result = await client.call_tool("get_status", {"service": "api"})
            assert not result.is_error, result
            rss, hwm = _memory_mb(pid)
    return elapsed, cpu, rss, hwm


async def main(rounds: int, entry: str) -> dict[str, dict[str, Samples]]:
    home = Path(tempfile.mkdtemp(prefix="agentguard-bench-startup-"))
    env = {**os.environ, "AGENTGUARD_HOME": str(home)}
    # An installed package has its bytecode (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile agentguard at every start (~150 ms of CPU on
    # the 2-core dev box). The warm-up start below writes the caches under a private prefix.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
    proxy = ["-m", "agentguard.proxy"] if entry == "module" else ["-m", "agentguard.cli",
                                                                    "proxy"]
    targets = {
        "upstream": StdioServerParameters(command=PY, args=[OPS], env=env, cwd=str(ROOT)),
        "proxy": StdioServerParameters(
            command=PY, cwd=str(ROOT), env=env,
            args=[*proxy, "--policy", POLICY, "--name", "ops", "--log-level", "WARNING",
                  "--", PY, OPS]),
    }
    out = {era: {name: Samples() for name in targets} for era in ERAS}
    # One unmeasured start of each warms the page cache and writes the bytecode caches.
    for params in targets.values():
        await _one(params, "legacy")
    for round_ in range(rounds):
        runs = [(era, name) for era in ERAS for name in targets]
        for era, name in runs if round_ % 2 == 0 else runs[::-1]:
            ms, cpu, rss, hwm = await _one(targets[name], era)
            s = out[era][name]
            s.start_ms.append(ms)
            s.cpu_ms.append(cpu)
            s.rss_mb.append(rss)
            s.hwm_mb.append(hwm)
    return out


def report(out: dict[str, dict[str, Samples]], rounds: int, entry: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}; {rounds} rounds; proxy started as "
          f"{'python -m agentguard.proxy' if entry == 'module' else 'agentguard proxy'}")
    med = statistics.median
    for era in ERAS:
        up, px = out[era]["upstream"], out[era]["proxy"]
        diffs = [p - u for p, u in zip(px.start_ms, up.start_ms, strict=True)]
        ratios = [p / u for p, u in zip(px.start_ms, up.start_ms, strict=True)]
        print(f"{ERA_NAMES[era]}: start-up upstream alone {med(up.start_ms):.0f} ms "
              f"({min(up.start_ms):.0f}-{max(up.start_ms):.0f}), through the proxy "
              f"{med(px.start_ms):.0f} ms ({min(px.start_ms):.0f}-{max(px.start_ms):.0f}); "
              f"proxy adds {med(diffs):+.0f} ms (target <= 250), ratio {med(ratios):.2f}x")
        print(f"{'':<4}CPU of the process spawned, by the answer: upstream alone "
              f"{med(up.cpu_ms):.0f} ms, proxy {med(px.cpu_ms):.0f} ms (its own; "
              f"{med(px.cpu_ms) - med(up.cpu_ms):+.0f} ms: the least it adds with a core "
              "free for each)")
        print(f"{'':<4}RSS after one call: proxy process {med(px.rss_mb):.1f} MB (peak "
              f"{med(px.hwm_mb):.1f}; target < 60), upstream alone {med(up.rss_mb):.1f} MB")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--entry", choices=["module", "cli"], default="module",
                        help="start the proxy as `python -m agentguard.proxy` or as the "
                        "`agentguard proxy` command (`python -m agentguard.cli proxy`)")
    ns = parser.parse_args()
    report(anyio.run(main, ns.rounds, ns.entry), ns.rounds, ns.entry)
