"""Store figures across replicas: PostgreSQL against SQLite, measured in the same run.

- **Wake-up latency across replicas**: a call waits on store A (``wait_for_change``); the
  decision is voted through store B, another store object with its own connections. Measured
  from just before the vote until the waiter returns, so it includes the vote itself. PostgreSQL
  wakes A by LISTEN/NOTIFY; SQLite (two ``SQLiteStore`` objects on one file) by polling.
- **Claims/s**: ``consume`` of approved requests (the single-use claim before a call runs), one
  client at a time and with 8 concurrent clients.

PostgreSQL figures are also given as ratios to SQLite's. Needs the PostgreSQL server named by
``AGENTGUARD_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``); works in a
throw-away schema. Run: ``.venv/bin/python benchmarks/bench_store.py`` (about 20-40 s).
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import psycopg
from psycopg import sql

from agentguard.store.base import Store
from agentguard.store.postgres import PostgresStore
from agentguard.store.sqlite import SQLiteStore
from agentguard.testing.store_samples import sample_request, vote

DSN = os.environ.get("AGENTGUARD_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
WAKES = 200  # samples per backend (bounded also by WAKE_BUDGET)
WAKE_BUDGET = 12.0
CLAIMS = 1000  # approved requests to claim per mode (bounded also by CLAIM_BUDGET)
CLAIM_BUDGET = 6.0
CONCURRENCY = 8


async def wake_latencies(waiting: Store, deciding: Store) -> list[float]:
    """Seconds from the vote on ``deciding`` until the waiter on ``waiting`` returns."""
    samples: list[float] = []
    deadline = time.perf_counter() + WAKE_BUDGET
    while len(samples) < WAKES and time.perf_counter() < deadline:
        request = sample_request(time.time)
        await waiting.create_request(request)
        woke: list[float] = []

        async def waiter(request_id: str = request.id, into: list[float] = woke) -> None:
            got = await waiting.wait_for_change(request_id, timeout=10)
            assert got is not None and got.status == "approved", got
            into.append(time.perf_counter())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            # Vary where in a poll cycle the vote lands (that is what polling costs).
            await anyio.sleep(0.01 + (len(samples) % 10) * 0.005)
            start = time.perf_counter()
            await deciding.record_vote(request.id, vote("alice"))
        samples.append(woke[0] - start)
    return samples


async def claims_per_second(store: Store, concurrency: int) -> float:
    """Approved requests consumed per second by ``concurrency`` clients."""
    requests = [sample_request(time.time) for _ in range(CLAIMS)]
    for request in requests:
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice"))
    queue = list(reversed(requests))
    done = 0
    deadline = time.perf_counter() + CLAIM_BUDGET

    async def client() -> None:
        nonlocal done
        while queue and time.perf_counter() < deadline:
            request = queue.pop()
            assert await store.consume(request.id, request.call_hash)
            done += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(client)
    return done / (time.perf_counter() - start)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(make: Callable[[], Store]) -> dict[str, float]:
    async with make() as waiting, make() as deciding:  # type: ignore[attr-defined]
        latencies = await wake_latencies(waiting, deciding)
        sequential = await claims_per_second(deciding, 1)
        concurrent = await claims_per_second(deciding, CONCURRENCY)
    return {
        "p50": statistics.median(latencies) * 1000, "p99": percentile(latencies, 0.99) * 1000,
        "n": len(latencies), "seq": sequential, "conc": concurrent,
    }


def main() -> None:
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        sys.exit(f"PostgreSQL does not answer at AGENTGUARD_PG_DSN: {exc}")
    schema = f"agentguard_bench_{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "state.db"
            lite = anyio.run(measure, lambda: SQLiteStore(db))
        pg = anyio.run(measure, lambda: PostgresStore(DSN, schema=schema))
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))

    print("wake-up latency across replicas (vote on store B -> waiter on store A returns)")
    print(f"  {'':10s} {'p50':>9s} {'p99':>9s}  samples")
    for name, f in (("sqlite", lite), ("postgres", pg)):
        print(f"  {name:10s} {f['p50']:7.2f}ms {f['p99']:7.2f}ms  {f['n']:.0f}")
    print(f"  postgres / sqlite: p50 {pg['p50'] / lite['p50']:.2f}x, "
          f"p99 {pg['p99'] / lite['p99']:.2f}x  (target: postgres p99 < 100 ms)")
    print("\nclaims/s (consume of approved requests)")
    print(f"  {'':10s} {'1 client':>10s} {f'{CONCURRENCY} clients':>10s}")
    for name, f in (("sqlite", lite), ("postgres", pg)):
        print(f"  {name:10s} {f['seq']:10.0f} {f['conc']:10.0f}")
    print(f"  postgres / sqlite: {pg['seq'] / lite['seq']:.2f}x (1 client), "
          f"{pg['conc'] / lite['conc']:.2f}x ({CONCURRENCY} clients)")


if __name__ == "__main__":
    main()
