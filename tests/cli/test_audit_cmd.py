"""`agentguard audit verify|tail|report` on a PostgreSQL log (--audit URL or AGENTGUARD_AUDIT)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from agentguard.audit import Redactor
from agentguard.audit.postgres import PostgresAuditLog
from agentguard.cli import app
from tests.audit.helpers import KEY, event
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = pytest.mark.postgres
runner = CliRunner()


@pytest.fixture
def url() -> Iterator[str]:
    pg = reachable_dsn()
    with fresh_schema(pg) as schema:
        with PostgresAuditLog(pg, schema=schema, redactor=Redactor(KEY)) as log:
            for i in range(5):
                log.append(event(i, request_id=f"r{i}"))
            log.append({"type": "challenge.approved", "call_id": "c4", "request_id": "r4",
                        "outcome": "approved", "tool": "secrets.read"})
        sep = "&" if "?" in pg else "?"
        yield f"{pg}{sep}schema={schema}"


def test_verify_reads_the_postgres_chain(url: str) -> None:
    result = runner.invoke(app, ["audit", "verify", url])
    assert result.exit_code == 0, result.output
    assert "ok: 6 record(s)" in result.output
    as_json = runner.invoke(app, ["audit", "verify", url, "--json"])
    assert json.loads(as_json.stdout)["records"] == 6


def test_verify_fails_on_an_edited_row(url: str) -> None:
    dsn, schema = url.rsplit("schema=", 1)
    with psycopg.connect(dsn.rstrip("?&"), autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {} SET line = replace(line, 'prod/db/2', 'prod/db/X')"
                             " WHERE seq = 3").format(sql.Identifier(schema, "audit_log")))
    result = runner.invoke(app, ["audit", "verify", url])
    assert result.exit_code == 1
    assert "FAILED" in result.output


def test_verify_refuses_jsonl_only_options(url: str) -> None:
    result = runner.invoke(app, ["audit", "verify", url, "--expect", "1:" + "0" * 64])
    assert result.exit_code != 0 and "JSONL" in result.output


def test_tail_reads_the_last_records(url: str) -> None:
    result = runner.invoke(app, ["audit", "tail", url, "-n", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [5, 6]


def test_report_and_the_environment_variable(url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGUARD_AUDIT", url)
    result = runner.invoke(app, ["audit", "report", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["chain"] == {"ok": True, "records": 6, "problems": []}
    assert summary["events"] == 6 and "schema" in summary["source"]
    assert "@" not in summary["source"]  # no user or password in what is shown
    tail = runner.invoke(app, ["audit", "tail", "-n", "1", "--json"])
    assert json.loads(tail.stdout)["type"] == "challenge.approved"


def test_rotate_refuses_a_postgres_log(url: str) -> None:
    result = runner.invoke(app, ["audit", "rotate", url])
    assert result.exit_code != 0 and "JSONL" in result.output
