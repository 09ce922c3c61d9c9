"""Audit append throughput: JSONL sink (fsync off and on) and the in-memory sink.

Each figure is also given as a ratio to a baseline measured in the same run: a plain
``f.write(json.dumps(event) + "\\n")`` loop into the same kind of file (no redaction, no
chain, no lock). Target: the JSONL sink with fsync off appends at least 20,000 events/s.

Run: ``.venv/bin/python benchmarks/bench_audit.py`` (about 10-20 s).
"""

from __future__ import annotations

import json
import os
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

        with JsonlAuditLog(Path(tmp, "nofsync.jsonl"), redactor=Redactor(key)) as log:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
