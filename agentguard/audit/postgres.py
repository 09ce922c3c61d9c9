"""Hash-chained audit log in PostgreSQL: one chain shared by every replica.

Records are chained exactly as :class:`~agentguard.audit.jsonl.JsonlAuditLog` chains them (see
:mod:`agentguard.audit._chain`); each is a row of ``<schema>.audit_log`` holding its ``seq``,
``hash`` and the sealed line. ``<schema>.audit_head`` has a single row naming the last record.
An append locks that row (``SELECT ... FOR UPDATE``), seals the event after it, inserts the
record and moves the head, all in one transaction: writers in any number of processes and hosts
queue on the lock and extend one chain, and a write that fails leaves nothing behind.

:func:`verify_postgres_log` reads the chain in one snapshot and checks it with
:func:`~agentguard.audit.verify.verify_records`; the head row reveals a deleted tail.

:meth:`PostgresAuditLog.append` writes one record synchronously (for CLI callers);
:meth:`PostgresAuditLog.submit` queues a record for **group commit**: a writer thread, on a
connection of its own, seals every record queued meanwhile and stores them in one transaction
(one ``INSERT ... SELECT FROM unnest(...)``), so the event loop never waits on the server and
many concurrent guarded calls share one commit (see :mod:`agentguard.audit._group`).

:func:`read_postgres_events` reads records back (``agentguard audit tail|report --audit
postgresql://...``); :func:`split_audit_url` takes the ``?schema=`` out of such a URL.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from agentguard.audit._chain import ChainError, check_line, check_record, seal
from agentguard.audit._group import GroupCommitted, GroupCommitter
from agentguard.audit._url import is_postgres_url, split_audit_url
from agentguard.audit.redact import Redactor
from agentguard.audit.verify import Problem, VerifyReport, verify_records
from agentguard.errors import AuditError, StoreError
from agentguard.store._pg_pool import describe
from agentguard.store._pg_schema import DEFAULT_SCHEMA, SCHEMA_VERSION, Names, check_version

__all__ = [
    "PostgresAuditLog",
    "is_postgres_url",
    "read_postgres_events",
    "split_audit_url",
    "verify_postgres_log",
]


def _migrate(conn: psycopg.Connection[Any], names: Names) -> None:
    """Create or upgrade the schema (same tables and version as the PostgreSQL store)."""
    found = conn.execute("SELECT to_regclass(%s)", (names.q("{s}.schema_version"),)).fetchone()
    if found is not None and found[0] is not None:
        row = conn.execute(names.version_sql()).fetchone()
        if check_version(names.schema, row[0] if row else None) == SCHEMA_VERSION:
            return
    with conn.transaction():
        for statement in names.prelude():
            conn.execute(statement)
        row = conn.execute(names.version_sql()).fetchone()
        for statement in names.upgrade(check_version(names.schema, row[0] if row else None)):
            conn.execute(statement)


class PostgresAuditLog(GroupCommitted):
    """An :class:`~agentguard.audit.base.AuditSink` whose chain lives in PostgreSQL.

    Safe for threads and for any number of writer processes on one schema. Every failure
    (server gone, table dropped, head row missing) raises :class:`AuditError`, so the guard
    refuses privileged calls.

    Args:
        dsn: libpq connection string or URL.
        schema: Schema holding ``audit_log`` and ``audit_head`` (shared with the
            PostgreSQL store; created if missing).
        redactor: Replaces secrets before anything is written; defaults to a random
            per-process key (pass ``Redactor(load_or_create_key(...))`` so that equal secrets
            correlate across replicas).
        connect_timeout: Seconds to wait for the server.

    Raises:
        AuditError: the server cannot be reached or the schema is newer than supported.
        ConfigError: ``schema`` is not an acceptable name.
    """

    def __init__(
        self, dsn: str, *, schema: str = DEFAULT_SCHEMA, redactor: Redactor | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._names = Names(schema)
        self.dsn = dsn
        self.schema = schema
        self._redactor = redactor if redactor is not None else Redactor.ephemeral()
        self._timeout = max(1, round(connect_timeout))
        self._lock = threading.Lock()
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        q = self._names.q
        self._head_sql = q("SELECT seq, hash FROM {s}.audit_head WHERE id = 1 FOR UPDATE")
        # Moving the head and inserting the group in one statement: one round trip.
        self._write_sql = q(
            "WITH h AS (UPDATE {s}.audit_head SET seq = %(seq)s, hash = %(hash)s"
            " WHERE id = 1 AND seq = %(prev)s RETURNING seq)"
            " INSERT INTO {s}.audit_log (seq, hash, line)"
            " SELECT r.seq, r.hash, r.line FROM h,"
            " unnest(%(seqs)s::bigint[], %(hashes)s::text[], %(lines)s::text[])"
            " AS r(seq, hash, line)"
        )
        with self._lock:
            self._connection()
        self._group = GroupCommitter(self._commit, name=f"agentguard-audit {schema}")

    def __repr__(self) -> str:
        return f"PostgresAuditLog({describe(self.dsn)!r}, schema={self.schema!r})"

    def __enter__(self) -> PostgresAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken and self._pid == os.getpid():
            return conn
        # A connection inherited over fork() belongs to the parent: never touch it.
        self._conn = None
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self._timeout)
        except psycopg.Error as exc:
            raise AuditError(f"cannot open the PostgreSQL audit log at {describe(self.dsn)}: "
                             f"{exc}") from exc
        try:
            _migrate(conn, self._names)
        except (psycopg.Error, StoreError) as exc:
            conn.close()
            raise AuditError(f"cannot open the PostgreSQL audit log: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _commit(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Seal and store prepared events in one transaction, all or none."""
        with self._lock:
            if self._closed:
                raise AuditError("the PostgreSQL audit log is closed")
            conn = self._connection()
            try:
                with conn.transaction():
                    head = conn.execute(self._head_sql).fetchone()
                    if head is None:
                        raise AuditError(
                            f"the audit head row of schema {self.schema!r} is missing; "
                            "run verify_postgres_log"
                        )
                    first, prev = head
                    seq = first
                    records, seqs, hashes, lines = [], [], [], []
                    for data in batch:
                        seq += 1
                        record, line = seal(data, seq, prev)
                        prev = record["hash"]
                        records.append(record)
                        seqs.append(seq)
                        hashes.append(prev)
                        lines.append(line.decode("ascii").rstrip("\n"))
                    written = conn.execute(self._write_sql, {
                        "seq": seq, "prev": first, "hash": prev,
                        "seqs": seqs, "hashes": hashes, "lines": lines,
                    }).rowcount
                    if written != len(batch):  # pragma: no cover - excluded by the row lock
                        raise AuditError("the audit head moved during an append")
            except psycopg.Error as exc:
                raise AuditError(f"cannot write the PostgreSQL audit log: {exc}") from exc
        return records

    def close(self) -> None:
        """Commit what is queued, then close the connection. Appending afterwards raises
        :class:`AuditError`."""
        self._group.close()
        with self._lock:
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _records(rows: Iterator[tuple[int, str]], problems: list[Problem]) -> Iterator[Any]:
    """Parsed records for :func:`verify_records`; what only a row can show goes to problems."""
    for seq, line in rows:
        try:
            record = json.loads(line)
        except ValueError:
            yield line  # not a mapping: verify_records reports it as malformed
            continue
        if isinstance(record, dict) and record.get("seq") != seq:
            problems.append(Problem(seq, None, "edited",
                                    f"row {seq} holds record {record.get('seq')!r}"))
        try:
            check_line((line + "\n").encode("utf-8", "surrogateescape"))
        except ChainError as error:
            try:
                check_record(dict(record) if isinstance(record, dict) else record)
            except ChainError:
                pass  # verify_records reports this one
            else:
                problems.append(Problem(seq, None, "edited", error.detail))
        yield record


def verify_postgres_log(
    dsn: str, *, schema: str = DEFAULT_SCHEMA, max_problems: int = 1000,
) -> VerifyReport:
    """Verify the audit chain in ``schema``: edits, deletions, reordering, a deleted tail.

    Reads one consistent snapshot (writers keep going), streaming the rows.

    Raises:
        AuditError: the database cannot be read.
    """
    names = Names(schema)
    extra: list[Problem] = []
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            head = conn.execute(
                names.q("SELECT seq, hash FROM {s}.audit_head WHERE id = 1")).fetchone()
            with conn.cursor(name="agentguard_audit_verify") as cur:
                cur.itersize = 2000
                cur.execute(names.q("SELECT seq, line FROM {s}.audit_log ORDER BY seq"))
                report = verify_records(_records(iter(cur), extra), max_problems=max_problems)
    except psycopg.Error as exc:
        raise AuditError(f"cannot read the PostgreSQL audit log: {exc}") from exc
    if head is None:
        extra.append(Problem(None, None, "head_missing", "the audit head row is missing"))
    else:
        seq, digest = head
        if report.last_seq < seq:
            extra.append(Problem(report.last_seq or None, None, "truncated", (
                f"the head says the chain ends at record {seq}; it ends at record "
                f"{report.last_seq}")))
        elif report.last_seq > seq:
            extra.append(Problem(seq, None, "head_behind", (
                f"the chain continues after record {seq}, where the head says it ends: "
                "records were written around the sink")))
        elif report.last_hash != digest:
            extra.append(Problem(seq, None, "head_mismatch",
                                 f"record {seq} does not have the hash the head row holds"))
    for problem in extra:
        if len(report.problems) < max_problems:
            report.problems.append(problem)
        else:
            report.unlisted += 1
    report.ok = report.ok and not extra
    return report


def read_postgres_events(
    dsn: str, *, schema: str = DEFAULT_SCHEMA, since_seq: int = 0, last: int | None = None,
) -> list[dict[str, Any]]:
    """Records of the PostgreSQL log, oldest first (parsed, not verified).

    Args:
        dsn: libpq connection string or URL.
        schema: The schema holding ``audit_log``.
        since_seq: Only records after this ``seq``.
        last: Only the newest ``last`` records.

    Raises:
        AuditError: the database cannot be read, or a row is not a JSON object.
    """
    names = Names(schema)
    where = "WHERE seq > %(since)s"
    if last is None:
        sql = f"SELECT seq, line FROM {{s}}.audit_log {where} ORDER BY seq"
    else:
        sql = (f"SELECT seq, line FROM (SELECT seq, line FROM {{s}}.audit_log {where}"
               " ORDER BY seq DESC LIMIT %(last)s) t ORDER BY seq")
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            rows = conn.execute(names.q(sql), {"since": since_seq, "last": last}).fetchall()
    except psycopg.Error as exc:
        raise AuditError(f"cannot read the PostgreSQL audit log: {exc}") from exc
    events = []
    for seq, line in rows:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise AuditError(f"audit row {seq} is not a JSON object; run `agentguard audit "
                             "verify`")
        events.append(record)
    return events
