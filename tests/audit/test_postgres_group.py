"""PostgresAuditLog group commit: concurrent records in one transaction each group, off the
event loop; a failed transaction refuses every ledger in it and stores nothing; the log is
read back by read_postgres_events (what `audit tail|report --audit postgresql://` use)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import psycopg
import pytest
from psycopg import sql

from agentguard import Guard, Policy
from agentguard.audit import AuditLedger, GroupCommitSink, Redactor
from agentguard.audit.postgres import (
    PostgresAuditLog,
    read_postgres_events,
    split_audit_url,
    verify_postgres_log,
)
from agentguard.errors import AuditError
from tests.audit.helpers import KEY, event
from tests.audit.test_guard_durability import POLICY, GatedChannel, call
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def pg() -> str:
    return reachable_dsn()


@pytest.fixture
def schema(pg: str) -> Iterator[str]:
    with fresh_schema(pg) as name:
        yield name


def test_split_audit_url() -> None:
    assert split_audit_url("postgresql://u@h:5432/db?schema=a1&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable", "a1")
    assert split_audit_url("postgres://h/db")[1] == "agentguard"
    with pytest.raises(AuditError, match="more than one schema"):
        split_audit_url("postgresql://h/db?schema=a&schema=b")


async def test_concurrent_records_commit_in_groups_and_chain(pg: str, schema: str) -> None:
    log = PostgresAuditLog(pg, schema=schema, redactor=Redactor(KEY))
    assert isinstance(log, GroupCommitSink)
    seqs: list[int] = []

    async def one(i: int) -> None:
        seqs.append((await log.append_async(event(i)))["seq"])

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)
    log.append(event(200))  # the synchronous path continues the chain
    log.close()
    assert sorted(seqs) == list(range(1, 201))
    report = verify_postgres_log(pg, schema=schema)
    assert report.ok and report.records == 201, report.problems
    assert [e["seq"] for e in read_postgres_events(pg, schema=schema, last=3)] == [
        199, 200, 201]
    assert [e["seq"] for e in read_postgres_events(pg, schema=schema, since_seq=199)] == [
        200, 201]


async def test_a_failed_group_transaction_fails_every_ledger_and_stores_nothing(
    pg: str, schema: str,
) -> None:
    log = PostgresAuditLog(pg, schema=schema, redactor=Redactor(KEY))
    log.append(event(0))
    with psycopg.connect(pg, autocommit=True) as conn:  # someone deletes the head row
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "audit_head")))
    ledgers = [AuditLedger() for _ in range(10)]
    for i, ledger in enumerate(ledgers):
        log.submit(event(i + 1), ledger)
    for ledger in ledgers:
        with pytest.raises(AuditError, match="head row"):
            await ledger.durable()
    log.close()
    assert [e["seq"] for e in read_postgres_events(pg, schema=schema)] == [1]


async def test_held_calls_records_are_in_postgres_before_their_tools_run(
    pg: str, schema: str,
) -> None:
    channel = GatedChannel()
    found: list[set[str]] = []

    async def tool_run(guard: Guard, i: int) -> None:
        auth = await guard.authorize(call(i))
        assert auth.outcome == "approved", auth.reason
        found.append({e["type"] for e in read_postgres_events(pg, schema=schema)
                      if e.get("request_id") == auth.request_id})

    guard = Guard(Policy.from_yaml(POLICY), channels=[channel],
                  audit=PostgresAuditLog(pg, schema=schema, redactor=Redactor(KEY)))
    async with guard, anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(tool_run, guard, i)
        while len(channel.asked) < 6:
            await anyio.sleep(0.01)
        channel.gate.set()
    guard.audit.close()
    assert len(found) == 6
    assert all({"challenge.created", "call.executed"} <= types for types in found)
    assert verify_postgres_log(pg, schema=schema).ok
