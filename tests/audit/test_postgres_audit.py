"""PostgresAuditLog: one chain in PostgreSQL, kept by several writer processes, checked for
tampering by verify_postgres_log. Each test works in its own schema, dropped afterwards."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from agentguard.audit import GENESIS_HASH, Redactor
from agentguard.audit._chain import encode
from agentguard.audit.base import AuditSink
from agentguard.audit.postgres import PostgresAuditLog, verify_postgres_log
from agentguard.errors import AuditError
from agentguard.store._pg_schema import SCHEMA_VERSION
from tests.audit.helpers import KEY, event
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from agentguard.audit import Redactor
    from agentguard.audit.postgres import PostgresAuditLog

    dsn, schema, go, name, count = sys.argv[1:]
    with PostgresAuditLog(dsn, schema=schema, redactor=Redactor(b"k" * 32)) as log:
        Path(f"{go}.ready-{name}").touch()
        deadline = time.monotonic() + 60
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        for i in range(int(count)):
            log.append({"type": "call.executed", "writer": name, "i": i})
""")


@pytest.fixture
def pg() -> str:
    return reachable_dsn()


@pytest.fixture
def schema(pg: str) -> Iterator[str]:
    with fresh_schema(pg) as name:
        yield name


@pytest.fixture
def log(pg: str, schema: str) -> Iterator[PostgresAuditLog]:
    with PostgresAuditLog(pg, schema=schema, redactor=Redactor(KEY)) as sink:
        yield sink


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def execute(dsn: str, query: sql.Composable, *params: object) -> list[tuple]:
    """Run SQL as someone with database access would, around the sink."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def stored(dsn: str, schema: str) -> list[dict]:
    rows = execute(dsn, sql.SQL("SELECT line FROM {} ORDER BY seq").format(
        table(schema, "audit_log")))
    return [json.loads(line) for (line,) in rows]


def kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def test_records_are_chained_numbered_and_verified(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    assert isinstance(log, AuditSink)
    records = [log.append(event(i)) for i in range(20)]
    assert stored(pg, schema) == records
    assert [r["seq"] for r in records] == list(range(1, 21))
    assert records[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    report = verify_postgres_log(pg, schema=schema)
    assert report.ok and report.records == 20 and report.last_hash == records[-1]["hash"]


def test_an_empty_log_verifies(pg: str, schema: str, log: PostgresAuditLog) -> None:
    report = verify_postgres_log(pg, schema=schema)
    assert report.ok and report.records == 0


def test_secrets_are_redacted_and_sink_fields_cannot_be_forged(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    record = log.append(event(1, args={"password": "hunter2", "note": "Bearer abc.def"},
                             seq=99, hash="f" * 64, prev_hash="e" * 64))
    assert record["seq"] == 1 and record["prev_hash"] == GENESIS_HASH
    raw = execute(pg, sql.SQL("SELECT line FROM {}").format(table(schema, "audit_log")))
    assert "hunter2" not in raw[0][0] and "Bearer abc" not in raw[0][0]
    assert verify_postgres_log(pg, schema=schema).ok


def test_writer_processes_appending_at_once_keep_one_chain(
    pg: str, schema: str, tmp_path: Path
) -> None:
    go, names, count = tmp_path / "go", ("a", "b", "c", "d"), 150
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, pg, schema, str(go), name,
                                 str(count)], env=env) for name in names]
    try:
        while not all(Path(f"{go}.ready-{n}").exists() for n in names):
            assert all(w.poll() is None for w in writers), "a writer died before starting"
        go.touch()
    finally:
        codes = [w.wait(timeout=90) for w in writers]
    assert codes == [0] * len(names)

    report = verify_postgres_log(pg, schema=schema)
    assert report.ok, report.problems
    assert report.records == report.last_seq == count * len(names)
    records = stored(pg, schema)
    for name in names:
        assert [r["i"] for r in records if r["writer"] == name] == list(range(count))
    # the writers really interleaved: one chain, not four runs one after another
    runs = sum(1 for a, b in itertools.pairwise(records) if a["writer"] != b["writer"])
    assert runs > len(names)


def test_an_edited_record_is_found(pg: str, schema: str, log: PostgresAuditLog) -> None:
    for i in range(5):
        log.append(event(i))
    execute(pg, sql.SQL("UPDATE {} SET line = replace(line, 'prod/db/2', 'prod/db/9')"
                        " WHERE seq = 3").format(table(schema, "audit_log")))
    report = verify_postgres_log(pg, schema=schema)
    assert not report.ok and kinds(report) == {"edited"}
    assert [p.seq for p in report.problems] == [3]


def test_a_rewritten_and_rehashed_record_breaks_the_chain(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    for i in range(4):
        log.append(event(i))
    forged = stored(pg, schema)[1]
    forged["reason"] = "nothing to see"
    del forged["hash"]
    digest = hashlib.sha256(encode(forged)).hexdigest()
    line = encode({**forged, "hash": digest}).decode()
    execute(pg, sql.SQL("UPDATE {} SET line = %s, hash = %s WHERE seq = 2").format(
        table(schema, "audit_log")), line, digest)
    report = verify_postgres_log(pg, schema=schema)
    assert not report.ok and "chain_broken" in kinds(report)


def test_a_deleted_record_and_a_deleted_tail_are_found(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    for i in range(6):
        log.append(event(i))
    execute(pg, sql.SQL("DELETE FROM {} WHERE seq = 3").format(table(schema, "audit_log")))
    assert "deleted" in kinds(verify_postgres_log(pg, schema=schema))
    execute(pg, sql.SQL("DELETE FROM {} WHERE seq >= 5").format(table(schema, "audit_log")))
    report = verify_postgres_log(pg, schema=schema)
    assert not report.ok and "truncated" in kinds(report)


def test_a_reformatted_row_and_a_moved_head_are_found(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    for i in range(3):
        log.append(event(i))
    pretty = json.dumps(stored(pg, schema)[0], indent=1)
    execute(pg, sql.SQL("UPDATE {} SET line = %s WHERE seq = 1").format(
        table(schema, "audit_log")), pretty)
    report = verify_postgres_log(pg, schema=schema)
    assert kinds(report) == {"edited"} and "form" in report.problems[0].detail
    execute(pg, sql.SQL("UPDATE {} SET hash = %s").format(table(schema, "audit_head")), "a" * 64)
    assert "head_mismatch" in kinds(verify_postgres_log(pg, schema=schema))


def test_appending_continues_the_chain_after_reopening(pg: str, schema: str) -> None:
    with PostgresAuditLog(pg, schema=schema) as first:
        first.append(event(1))
    with PostgresAuditLog(pg, schema=schema) as second:
        assert second.append(event(2))["seq"] == 2
    assert verify_postgres_log(pg, schema=schema).ok


def test_a_failed_write_raises_and_leaves_nothing(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    log.append(event(1))
    # the database refuses this record: the append fails as a whole
    execute(pg, sql.SQL("ALTER TABLE {} ADD CONSTRAINT short CHECK (length(line) < 600)").format(
        table(schema, "audit_log")))
    with pytest.raises(AuditError, match="cannot write"):
        log.append(event(2, args={"blob": "x" * 1000}))
    assert log.append(event(3))["seq"] == 2  # the head did not move for the failed one
    assert verify_postgres_log(pg, schema=schema).ok


def test_a_dropped_table_or_a_closed_log_raises(
    pg: str, schema: str, log: PostgresAuditLog
) -> None:
    log.append(event(1))
    execute(pg, sql.SQL("DROP TABLE {}").format(table(schema, "audit_log")))
    with pytest.raises(AuditError):
        log.append(event(2))
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(event(3))


def test_a_newer_schema_or_an_unreachable_server_is_refused(pg: str, schema: str) -> None:
    PostgresAuditLog(pg, schema=schema).close()
    execute(pg, sql.SQL("UPDATE {} SET version = %s").format(table(schema, "schema_version")),
            SCHEMA_VERSION + 1)
    with pytest.raises(AuditError, match="newer"):
        PostgresAuditLog(pg, schema=schema)
    with pytest.raises(AuditError, match="cannot open") as caught:
        PostgresAuditLog("postgresql://audit:s3cret-pw@127.0.0.1:1/none", connect_timeout=1)
    assert "s3cret-pw" not in str(caught.value)
