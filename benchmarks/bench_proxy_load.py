"""Load figures through the MCP proxy: 1,000 concurrent ``tools/call`` requests on one stdio
client session, every decision audited (``log_allows: true``) to the hash-chained JSONL log.

Rows, measured in one run against the counting upstream of
``tests/adversarial/proxy_helpers.py`` (900 ``get_item`` + 100 ``purge``):

- direct: the client talks to the upstream itself (the baseline; nothing is held);
- proxy, all allowed: 1,000 ``get_item`` calls through ``agentguard proxy``, each audited;
- proxy, 100 held: the 900/100 mix through the proxy, the 100 ``purge`` calls held until a
  voter in this process approves them through the shared SQLite store (what
  ``agentguard approvals approve`` does), as in tests/adversarial/test_proxy_load.py.

Process start-up is not timed: each round starts timing once the client is connected and has
listed the tools. The held row includes the approval round trips (the voter polls the store
every 20 ms; the proxy's guard watches it with a short backoff), so it measures how fast
approved calls get through, not the proxy's raw throughput.

Run: .venv/bin/python benchmarks/bench_proxy_load.py [--rounds 3] [--mode auto|legacy]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentguard.audit import read_events, verify_log  # noqa: E402
from tests.adversarial.proxy_helpers import (  # noqa: E402
    LOAD_POLICY,
    UPSTREAM,
    approve_all,
    executed,
    setup_proxy,
)

CALLS, HELD = 1000, 100


async def _flood(client: Client, held: int) -> float:
    """1,000 concurrent calls, the first ``held`` of them ``purge``; seconds taken."""
    async def one(n: int) -> None:
        result = await client.call_tool("purge" if n < held else "get_item", {"n": n})
        assert not result.is_error, result

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(CALLS):
            tg.start_soon(one, n)
    return time.perf_counter() - start


async def direct_round(tmp: Path, mode: str) -> tuple[float, int]:
    log = tmp / "executed.jsonl"
    params = StdioServerParameters(command=UPSTREAM[0], args=[*UPSTREAM[1:], "--log", str(log)],
                                   cwd=str(ROOT))
    async with Client(params, mode=mode, cache=None) as client:
        await client.list_tools()
        elapsed = await _flood(client, HELD)
    return elapsed, len(executed(log))


async def proxy_round(tmp: Path, mode: str, held: int) -> tuple[float, int, Counter[str], bool]:
    proxy = setup_proxy(tmp, LOAD_POLICY.replace("HELD", str(HELD)))
    log = tmp / "executed.jsonl"
    params = proxy.params(*UPSTREAM, "--log", str(log), name="counter")
    async with Client(params, mode=mode, cache=None) as client:
        await client.list_tools()
        box: list[float] = []

        async def flood() -> None:
            box.append(await _flood(client, held))

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            if held:
                await approve_all(proxy, held, timeout=120)
    types = Counter(e["type"] for e in read_events(proxy.audit))
    return box[0], len(executed(log)), types, verify_log(proxy.audit).ok


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    args = parser.parse_args()

    best: dict[str, tuple] = {}
    for _ in range(args.rounds):  # alternate, so load from elsewhere falls on every row
        with tempfile.TemporaryDirectory() as tmp:
            run = await direct_round(Path(tmp), args.mode)
            if "direct" not in best or run[0] < best["direct"][0]:
                best["direct"] = run
        for name, held in (("allowed", 0), ("held", HELD)):
            with tempfile.TemporaryDirectory() as tmp:
                run = await proxy_round(Path(tmp), args.mode, held)
                if name not in best or run[0] < best[name][0]:
                    best[name] = run

    base = best["direct"][0]
    print(f"{CALLS} concurrent tools/call on one stdio session ({args.mode} era), "
          f"log_allows on; best of {args.rounds}")
    print(f"  {'direct to the upstream':<30} {CALLS / base:>6,.0f} calls/s  "
          f"ran {best['direct'][1]}")
    for name, label in (("allowed", "proxy, all allowed"),
                        ("held", f"proxy, {HELD} held (approved)")):
        elapsed, ran, types, ok = best[name]
        print(f"  {label:<30} {CALLS / elapsed:>6,.0f} calls/s  "
              f"({elapsed / base:,.1f}x the direct time)  ran {ran}, "
              f"held {types['challenge.created']}, audit events {sum(types.values())}, "
              f"chain {'verified' if ok else 'BROKEN'}")

if __name__ == "__main__":
    anyio.run(main)
