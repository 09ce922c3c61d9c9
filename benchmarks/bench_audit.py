"""Audit throughput: synchronous appends, and durable interruption records by group commit.

Part 1, synchronous ``append``: the JSONL sink (fsync off and on) and the in-memory sink, as
ratios to a plain ``f.write(json.dumps(event) + "\\n")`` loop into the same kind of file (no
redaction, no chain, no lock). Target: the JSONL sink with fsync off appends at least 20,000
events/s.

Part 2, **durable** records (what the guard needs before a held call goes on): many
concurrent writers (asyncio tasks, as concurrent guarded calls) each awaiting
``append_async`` (redact, chain, group commit, sync). Same-run baselines: the bare durable
loop (``write`` + ``fdatasync`` per record, or ``INSERT`` + commit per record) and the bare
batched loop (one ``write`` + ``fdatasync``, or one multi-row ``INSERT`` transaction, per
group of the same size, no redaction or chain). Targets: at least 20,000 durable records/s
into JSONL and 5,000/s into PostgreSQL (``AGENTGUARD_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``, a throw-away schema; skipped if it does not
answer). Files go to ``$BENCH_DIR`` (default: the system temp dir; put it on the disk you
mean to measure: fsync costs differ by orders of magnitude between tmpfs, SSD and network
disks).

Run: ``.venv/bin/python benchmarks/bench_audit.py`` (about 30-40 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentguard.audit import JsonlAuditLog, MemoryAuditLog, Redactor, verify_log
from agentguard.audit._chain import encode
from agentguard.canonical import canonical_bytes

TARGET = 20_000
BUDGET = 2.0  # seconds per measurement


def make_event(i: int) -> dict[str, Any]:
    """A typical ``challenge.created`` event, shaped like the guard's."""
    return {
        "type": "challenge.created",
        "call_id": f"c_{i:032x}",
        "principal": "agent:support-bot",
        "principal_kind": "agent",
        "acting_for": "user:alice",
        "source_ip": "10.20.3.4",
        "session_id": "s_7f3a9b2c4d5e6f70",
        "server": "vault",
        "tool": "secrets.read",
        "origin": "mcp-proxy",
        "args": {"path": f"prod/db/{i}", "version": 3, "api_token": "tok-123456"},
        "privilege": "privileged",
        "labels": ["secret"],
        "rule_id": "prod-secrets",
        "reason": "secrets.read on prod/** is privileged",
        "signals": ["outside_change_window"],
        "requirement": "approve",
        "standards": ["OWASP-NHI-02"],
        "outcome": "held",
        "request_id": f"r_{i:032x}",
    }


def rate(append: Callable[[dict[str, Any]], Any], budget: float = BUDGET,
         limit: int = 200_000) -> tuple[float, int]:
    """Events per second over ``budget`` seconds (events built beforehand)."""
    events = [make_event(i) for i in range(2000)]
    count = 0
    start = time.perf_counter()
    while count < limit:
        for event in events:
            append(event)
        count += len(events)
        if time.perf_counter() - start > budget:
            break
    return count / (time.perf_counter() - start), count


def _per_call(fn: Callable[[Any], Any], arg: Any, n: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - start) / n


def main() -> int:
    key = b"k" * 32
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp, "baseline.jsonl")
        with open(base, "a") as f:
            baseline, _ = rate(lambda e: f.write(json.dumps(e) + "\n"))
        results: list[tuple[str, float, int]] = []

        with JsonlAuditLog(Path(tmp, "nofsync.jsonl"), redactor=Redactor(key),
                           fsync=False) as log:
            results.append(("JsonlAuditLog fsync=False", *rate(log.append)))
        with JsonlAuditLog(Path(tmp, "fsync.jsonl"), redactor=Redactor(key), fsync=True) as log:
            results.append(("JsonlAuditLog fsync=True", *rate(log.append, limit=20_000)))
        memory = MemoryAuditLog(redactor=Redactor(key))
        results.append(("MemoryAuditLog", *rate(memory.append, limit=100_000)))

        started = time.perf_counter()
        report = verify_log(Path(tmp, "nofsync.jsonl"))
        verify_rate = report.records / (time.perf_counter() - started)

    print(f"{'sink':28} {'events/s':>12} {'vs baseline':>12} {'events':>9}")
    print(f"{'baseline f.write(json.dumps)':28} {baseline:12,.0f} {1.0:12.3f}")
    for name, value, count in results:
        print(f"{name:28} {value:12,.0f} {value / baseline:12.3f} {count:9,}")
    print(f"{'verify_log (records/s)':28} {verify_rate:12,.0f} {verify_rate / baseline:12.3f}"
          f" {report.records:9,}  ok={report.ok}")
    # Why the chain does not use RFC 8785: the cost of encoding one sealed record each way.
    record = memory.events[-1]
    per = {name: _per_call(fn, record) for name, fn in (
        ("chain encoding (json, C)", encode), ("RFC 8785 canonical_bytes", canonical_bytes))}
    for name, seconds in per.items():
        print(f"{name:28} {seconds * 1e6:9.1f} us/record")
    jsonl = results[0][1]
    verdict = "meets" if jsonl >= TARGET else "MISSES"
    print(f"JSONL fsync=False {verdict} the {TARGET:,} events/s target ({jsonl:,.0f})")
    print()
    durable(key)
    return 0


# --------------------------------------------------------------------------- durable records
WRITERS = (64, 256)
PG_TARGET = 5_000
DSN = os.environ.get("AGENTGUARD_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"


def _lines(n: int) -> list[bytes]:
    return [(json.dumps(make_event(i)) + "\n").encode() for i in range(n)]


def bare_fsync_loop(path: Path, group: int, budget: float = BUDGET) -> float:
    """Records/s of the bare durable loop: ``group`` records per write + fdatasync."""
    lines = _lines(2000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    count, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < budget:
            for i in range(0, len(lines), group):
                os.write(fd, b"".join(lines[i:i + group]))
                os.fdatasync(fd)
                count += len(lines[i:i + group])
                if time.perf_counter() - start >= budget:
                    break
    finally:
        os.close(fd)
    return count / (time.perf_counter() - start)


async def _concurrent(append: Callable[[dict[str, Any]], Any], writers: int,
                      budget: float = BUDGET) -> float:
    """Records/s made durable by ``writers`` tasks each awaiting ``append`` in a loop."""
    events = [make_event(i) for i in range(2000)]
    deadline = time.perf_counter() + budget
    counts = [0] * writers

    async def writer(w: int) -> None:
        i = w
        while time.perf_counter() < deadline:
            await append(events[i % len(events)])
            counts[w] += 1
            i += writers

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return sum(counts) / (time.perf_counter() - start)


def _row(name: str, value: float, base: float, batched: float) -> None:
    print(f"{name:44} {value:10,.0f} {value / base:10.1f}x {value / batched:9.2f}x")


def durable(key: bytes) -> None:
    """Part 2: durable interruption records/s, JSONL and PostgreSQL."""
    print(f"{'durable records (group commit)':44} {'records/s':>10} {'vs bare':>11} "
          f"{'vs batch':>10}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        single = bare_fsync_loop(Path(tmp, "bare1.jsonl"), 1)
        print(f"{'bare write+fdatasync per record':44} {single:10,.0f} {1.0:10.1f}x")
        best = 0.0
        for writers in WRITERS:
            batched = bare_fsync_loop(Path(tmp, f"bare{writers}.jsonl"), writers)
            print(f"{f'bare batched loop ({writers} per fdatasync)':44} {batched:10,.0f} "
                  f"{batched / single:10.1f}x")
            path = Path(tmp, f"group{writers}.jsonl")
            log = JsonlAuditLog(path, redactor=Redactor(key))
            value = asyncio.run(_concurrent(log.append_async, writers))
            log.close()
            assert verify_log(path).ok
            _row(f"JsonlAuditLog.append_async, {writers} writers", value, single, batched)
            best = max(best, value)
        verdict = "meets" if best >= TARGET else "MISSES"
        print(f"JSONL durable {verdict} the {TARGET:,} records/s target ({best:,.0f})")
    _durable_postgres(key)


def _durable_postgres(key: bytes) -> None:
    import psycopg
    from psycopg import sql

    from agentguard.audit.postgres import PostgresAuditLog, verify_postgres_log

    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        print(f"PostgreSQL skipped: it does not answer at AGENTGUARD_PG_DSN ({exc})")
        return
    schema = f"agentguard_bench_{secrets.token_hex(4)}"
    lines = [line.decode().rstrip("\n") for line in _lines(2000)]
    try:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            bare = sql.Identifier(schema, "bare")
            conn.execute(sql.SQL("CREATE TABLE {} (seq bigserial PRIMARY KEY, line text)")
                         .format(bare))
            insert = sql.SQL("INSERT INTO {} (line) VALUES (%s)").format(bare)
            many = sql.SQL("INSERT INTO {} (line) SELECT unnest(%s::text[])").format(bare)

            def pg_loop(group: int) -> float:
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < BUDGET:
                    for i in range(0, len(lines), group):
                        if group == 1:
                            conn.execute(insert, (lines[i],))
                        else:
                            conn.execute(many, (lines[i:i + group],))
                        count += len(lines[i:i + group])
                        if time.perf_counter() - start >= BUDGET:
                            break
                return count / (time.perf_counter() - start)

            single = pg_loop(1)
            print(f"{'bare INSERT + commit per record':44} {single:10,.0f} {1.0:10.1f}x")
            best = 0.0
            for writers in WRITERS:
                batched = pg_loop(writers)
                print(f"{f'bare batched INSERT ({writers} per commit)':44} {batched:10,.0f} "
                      f"{batched / single:10.1f}x")
                sub = f"{schema}_{writers}"
                log = PostgresAuditLog(DSN, schema=sub, redactor=Redactor(key))
                value = asyncio.run(_concurrent(log.append_async, writers))
                log.close()
                assert verify_postgres_log(DSN, schema=sub).ok
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(sub)))
                _row(f"PostgresAuditLog.append_async, {writers} writers", value, single,
                     batched)
                best = max(best, value)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))
    verdict = "meets" if best >= PG_TARGET else "MISSES"
    print(f"PostgreSQL durable {verdict} the {PG_TARGET:,} records/s target ({best:,.0f})")


if __name__ == "__main__":
    sys.exit(main())
