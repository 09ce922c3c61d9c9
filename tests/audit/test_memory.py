"""MemoryAuditLog chains like the JSONL sink; the package exports what it documents."""

from __future__ import annotations

import itertools
import threading

import pytest

import agentguard.audit as audit
from agentguard.audit import (
    GENESIS_HASH,
    AuditSink,
    MemoryAuditLog,
    Redactor,
    verify_records,
)
from agentguard.errors import AuditError
from tests.audit.helpers import KEY, event


def test_memory_records_chain_like_the_file_sink() -> None:
    log = MemoryAuditLog(redactor=Redactor(KEY))
    assert isinstance(log, AuditSink)
    records = [log.append(event(i)) for i in range(5)]
    assert log.events == records
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    assert verify_records(log.events).ok
    assert log.of_type("challenge.created") == records


def test_memory_sink_is_safe_across_threads() -> None:
    log = MemoryAuditLog()

    def work() -> None:
        for i in range(200):
            log.append(event(i))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_records(log.events)
    assert report.ok and report.records == 800


def test_memory_sink_refuses_after_close_and_bad_events() -> None:
    log = MemoryAuditLog()
    with pytest.raises(AuditError):
        log.append(["not", "a", "mapping"])  # type: ignore[arg-type]
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(event(1))


def test_public_names_are_sorted_and_importable() -> None:
    assert audit.__all__ == sorted(audit.__all__, key=lambda n: (not n.isupper(), n))
    for name in audit.__all__:
        assert getattr(audit, name) is not None
