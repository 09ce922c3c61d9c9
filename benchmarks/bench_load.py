"""Load figures: 1,000 concurrent guarded calls, 100 of them held for approval (answered at
once by a scripted approver), every decision audited to a hash-chained JSONL log, on the
SQLite and in-memory stores. Reported against the same 1,000 calls through bare async
functions measured in the same run.

Run: python benchmarks/bench_load.py
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

from agentguard import Guard, Policy, acting_as, guarded
from agentguard.audit import JsonlAuditLog, read_events, verify_log
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import MemoryStore, SQLiteStore

CALLS, HELD, ROUNDS = 1000, 100, 3

POLICY = """
defaults: {timeout: 30s, log_allows: true}
groups: {oncall: [alice]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
  privileged: {require: deny}
rules:
  - {id: reads, match: {tool: get_status}, class: read}
  - {id: restart, match: {tool: restart}, class: destructive}
"""


async def bare_round() -> float:
    """The same 1,000 concurrent calls with no guard: the baseline."""
    async def get_status(n: int) -> int:
        await anyio.sleep(0)
        return n

    async def restart(service: str) -> str:
        await anyio.sleep(0)
        return service

    async def one(n: int) -> None:
        with acting_as(f"agent:worker-{n % HELD}"):
            await (restart(f"svc-{n}") if n < HELD else get_status(n))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(CALLS):
            tg.start_soon(one, n)
    return time.perf_counter() - start


async def guarded_round(kind: str, home: Path) -> tuple[float, Counter[str], Path]:
    log = home / "audit.jsonl"
    store = SQLiteStore(home / "state.db") if kind == "sqlite" else MemoryStore()
    guard = Guard(Policy.from_yaml(POLICY), store=store, audit=JsonlAuditLog(log),
                  channels=[ScriptedChannel([ScriptedChannel.vote("alice")])])
    ran: Counter[str] = Counter()

    @guarded(guard=guard)
    async def get_status(n: int) -> int:
        ran["allowed"] += 1
        return n

    @guarded(guard=guard)
    async def restart(service: str) -> str:
        ran["held"] += 1
        return service

    async def one(n: int) -> None:
        with acting_as(f"agent:worker-{n % HELD}"):
            await (restart(f"svc-{n}") if n < HELD else get_status(n))

    async with guard:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(CALLS):
                tg.start_soon(one, n)
        elapsed = time.perf_counter() - start
    return elapsed, ran, log


async def main() -> None:
    bare = min([await bare_round() for _ in range(ROUNDS)])
    print(f"{CALLS} concurrent calls, {HELD} held for approval (answered at once), "
          f"log_allows on; best of {ROUNDS}")
    print(f"  bare async functions   {CALLS / bare:>10,.0f} calls/s")
    for kind in ("memory", "sqlite"):
        best = None
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory() as tmp:
                elapsed, ran, log = await guarded_round(kind, Path(tmp))
                events = sum(1 for _ in read_events(log))
                report = verify_log(log)
                if best is None or elapsed < best[0]:
                    best = (elapsed, ran, events, report.ok)
        assert best is not None
        elapsed, ran, events, ok = best
        print(f"  guarded, {kind:<6} store  {CALLS / elapsed:>10,.0f} calls/s  "
              f"({elapsed / bare:,.0f}x the bare time)  held {ran['held']}, "
              f"allowed {ran['allowed']}, audit events {events}, "
              f"chain {'verified' if ok else 'BROKEN'}")


if __name__ == "__main__":
    anyio.run(main)
