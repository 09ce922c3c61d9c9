"""Group commit (agentguard.audit._group): many records, one write; a failed group refuses
every ledger in it and every record queued behind it, and nothing of it reaches the log."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard.audit import AuditLedger, GroupCommitSink, JsonlAuditLog, Redactor, verify_log
from agentguard.audit._group import GroupCommitter
from agentguard.audit.memory import MemoryAuditLog
from agentguard.audit.reader import read_events
from agentguard.errors import AuditError
from tests.audit.helpers import KEY, event

pytestmark = pytest.mark.anyio


class SlowStore:
    """A commit function that takes its time (so records pile up) and can be made to fail."""

    def __init__(self) -> None:
        self.groups: list[list[dict[str, Any]]] = []
        self.fail_next = False
        self.started = threading.Event()

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.started.set()
        time.sleep(0.02)
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk gone")
        self.groups.append(batch)
        return [dict(data, seq=i) for i, data in enumerate(batch)]


def test_sinks_implement_the_group_commit_protocol(tmp_path: Path) -> None:
    with JsonlAuditLog(tmp_path / "a.jsonl") as log:
        assert isinstance(log, GroupCommitSink)
    assert isinstance(MemoryAuditLog(), GroupCommitSink)


async def test_concurrent_records_share_groups() -> None:
    store = SlowStore()
    committer = GroupCommitter(store, name="test")
    ledgers = [AuditLedger() for _ in range(50)]

    async def one(ledger: AuditLedger, i: int) -> None:
        committer.submit({"type": "challenge.created", "i": i}, ledger)
        committer.submit({"type": "call.executed", "i": i}, ledger)
        await ledger.durable()

    async with anyio.create_task_group() as tg:
        for i, ledger in enumerate(ledgers):
            tg.start_soon(one, ledger, i)
    committer.close()
    written = [data["i"] for group in store.groups for data in group]
    assert sorted(written) == sorted(list(range(50)) * 2)
    assert len(store.groups) < 10  # 100 records, a handful of writes
    assert all(ledger.pending == 0 and ledger.error is None for ledger in ledgers)


async def test_a_failed_group_fails_its_ledgers_and_what_queued_behind_it() -> None:
    store = SlowStore()
    committer = GroupCommitter(store, name="test")
    first, behind, later = AuditLedger(), AuditLedger(), AuditLedger()
    store.fail_next = True
    committer.submit({"type": "challenge.created"}, first)
    store.started.wait(5)  # the failing group is being written; this one queues behind it
    committer.submit({"type": "challenge.created"}, behind)
    for ledger in (first, behind):
        with pytest.raises(AuditError, match="disk gone"):
            await ledger.durable()
    # A call whose record was lost cannot get another one in: nothing false follows it.
    with pytest.raises(AuditError, match="earlier audit record of this call"):
        committer.submit({"type": "call.executed"}, first)
    committer.submit({"type": "challenge.created", "n": 3}, later)  # a new call: written
    await later.durable()
    committer.close()
    assert [data for group in store.groups for data in group] == [
        {"type": "challenge.created", "n": 3}]


async def test_jsonl_group_commit_chains_every_record_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = JsonlAuditLog(path, redactor=Redactor(KEY))
    records = []

    async def one(i: int) -> None:
        records.append(await log.append_async(event(i)))

    async with anyio.create_task_group() as tg:
        for i in range(300):
            tg.start_soon(one, i)
    log.append(event(300))  # the synchronous path continues the same chain
    log.close()
    report = verify_log(path)
    assert report.ok and report.records == 301
    assert sorted(r["seq"] for r in records) == list(range(1, 301))
    assert sorted(e["call_id"] for e in read_events(path)) == sorted(
        f"c{i}" for i in range(301))


async def test_jsonl_failed_group_leaves_nothing(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available")
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    log = JsonlAuditLog(path, redactor=Redactor(KEY))
    ledger = AuditLedger()
    with pytest.raises(AuditError):  # at submit, once the first group failed; else at wait
        for i in range(5):
            log.submit(event(i), ledger)
        await ledger.durable()
    assert ledger.error is not None and "cannot write audit log" in str(ledger.error)
    with pytest.raises(AuditError):
        await log.append_async(event(9))
    log.close()


async def test_closed_sink_refuses_and_close_writes_what_was_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = JsonlAuditLog(path, redactor=Redactor(KEY))
    ledger = AuditLedger()
    for i in range(20):
        log.submit(event(i), ledger)
    log.close()  # drains the queue first
    assert ledger.pending == 0 and ledger.error is None
    assert verify_log(path).records == 20
    with pytest.raises(AuditError, match="closed"):
        log.submit(event(99), AuditLedger())


def test_ledger_waits_synchronously(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with JsonlAuditLog(path, redactor=Redactor(KEY)) as log:
        ledger = AuditLedger()
        log.submit(event(1), ledger)
        ledger.wait(10)
        assert [e["seq"] for e in read_events(path)] == [1]
