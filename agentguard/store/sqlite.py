"""SQLite store: one file shared safely by several processes on one host.

- WAL journal and a busy timeout, so readers never block the writer and writers queue.
- Every write runs inside ``BEGIN IMMEDIATE``: the write lock is taken before anything is read,
  so a read-decide-update sequence (a vote, using a grant) cannot interleave with another
  process's. Status changes are conditional UPDATEs (``... WHERE status = 'pending'``) whose
  row count says who won.
- ``wait_for_change`` polls with a short backoff (decisions made by other processes) and wakes at
  once on decisions made through this store object.
- The schema version is kept in ``PRAGMA user_version``; a newer file is refused.
- The file is created with mode 0600: it holds TOTP secrets. SQLite gives its ``-wal`` and
  ``-shm`` files the same mode.

Blocking calls run in worker threads (``anyio.to_thread``) on one connection guarded by a lock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

from agentguard.errors import ConfigError, ConflictError, StoreError
from agentguard.store._codec import (
    grant_from_dict,
    grant_to_dict,
    request_from_dict,
    request_to_dict,
)
from agentguard.store._rules import (
    Waiters,
    apply_vote,
    grant_covers,
    grant_preference,
    present,
    wait_until_settled,
)
from agentguard.store._sqlite_schema import SCHEMA_VERSION, connect
from agentguard.store.base import VoteResult
from agentguard.types import ApprovalRequest, ApprovalVote, Grant, GrantQuery, RequestStatus

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

_FIRST_POLL = 0.02
_MAX_POLL = 0.2
# Used TOTP steps older than this many steps can no longer match any window; forget them.
_OTP_KEEP_STEPS = 1000

T = TypeVar("T")


def _dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _request(status: str, doc: str) -> ApprovalRequest:
    data = json.loads(doc)
    # The status column is what conditional UPDATEs test, so it is the truth.
    data["status"] = status
    return request_from_dict(data)


class SQLiteStore:
    """A :class:`~agentguard.store.Store` in one SQLite file, safe across processes.

    Args:
        path: Database file; created (mode 0600) if missing. Its directory must exist.
        clock: Source of the current Unix time (inject a manual clock in tests).
        busy_timeout: Seconds to wait for another process's write lock before failing.

    Raises:
        ConfigError: ``path`` is ``:memory:`` (use ``memory://``).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:"):
            raise ConfigError("SQLiteStore needs a file path; use memory:// for an in-memory store")
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._waiters = Waiters()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, write: bool, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = connect(self.path, self._busy_timeout)
                conn = self._conn
                if not write:
                    return fn(conn, *args)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, *args)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path!r} failed: {exc}") from exc

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self._call, False, fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self._call, True, fn, *args)

    async def open(self) -> None:
        """Create the file and tables if needed and check the schema version. Idempotent.

        Raises:
            StoreError: the file cannot be opened or has a newer schema.
        """
        await self._read(lambda conn: None)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def close(self) -> None:
        """Close the connection. Idempotent; a later call reconnects."""
        await anyio.to_thread.run_sync(self._close)

    # -- approval requests -------------------------------------------------------------
    async def create_request(self, request: ApprovalRequest) -> None:
        doc = _dumps(request_to_dict(request))

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO requests (id, status, call_hash, created_at, expires_at, doc)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (request.id, request.status, request.call_hash, request.created_at,
                     request.expires_at, doc),
                )
            except sqlite3.IntegrityError:
                raise StoreError("an approval request with this id already exists") from None

        await self._write(insert)

    async def get_request(self, request_id: str) -> ApprovalRequest | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT status, doc FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
        )
        return None if row is None else present(_request(*row), self._clock())

    async def list_requests(
        self, status: RequestStatus | None = None, limit: int = 100, *,
        call_hash: str | None = None,
    ) -> Sequence[ApprovalRequest]:
        now = self._clock()
        params: tuple[Any, ...]
        if status is None:
            where, params = "1", ()
        elif status == "pending":
            where, params = "status = 'pending' AND expires_at > ?", (now,)
        elif status == "expired":
            where, params = "(status = 'expired' OR (status = 'pending' AND expires_at <= ?))", (
                now,)
        else:
            where, params = "status = ?", (status,)
        if call_hash is not None:
            where, params = f"call_hash = ? AND {where}", (call_hash, *params)
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT status, doc FROM requests WHERE {where}"
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, max(0, limit)),
            ).fetchall()
        )
        return [present(_request(*row), now) for row in rows]

    async def count_pending(self, principal: str, privilege: str) -> int:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ?"
                " AND json_extract(doc, '$.call.principal') = ?"
                " AND json_extract(doc, '$.privilege') = ?",
                (self._clock(), principal, privilege),
            ).fetchone()
        )
        return int(row[0])

    async def record_vote(self, request_id: str, vote: ApprovalVote) -> VoteResult:
        def vote_tx(conn: sqlite3.Connection) -> tuple[ApprovalRequest, bool]:
            row = conn.execute(
                "SELECT status, doc FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise ConflictError("no approval request with this id")
            updated, counted = apply_vote(_request(*row), vote, self._clock())
            if counted:
                cursor = conn.execute(
                    "UPDATE requests SET status = ?, doc = ? WHERE id = ? AND status = 'pending'",
                    (updated.status, _dumps(request_to_dict(updated)), request_id),
                )
                if cursor.rowcount != 1:  # pragma: no cover - excluded by BEGIN IMMEDIATE
                    raise ConflictError("approval request changed while voting")
            return updated, counted

        updated, counted = await self._write(vote_tx)
        if updated.status != "pending":
            self._waiters.notify(request_id)
        return VoteResult(updated, counted)

    async def wait_for_change(self, request_id: str, timeout: float) -> ApprovalRequest | None:
        return await wait_until_settled(
            self.get_request, self._waiters, request_id, timeout, first_poll=_FIRST_POLL,
            max_poll=_MAX_POLL,
        )

    async def _transition(
        self, request_id: str, allowed: str, to: str, call_hash: str | None = None
    ) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            sql = "UPDATE requests SET status = ?, doc = json_set(doc, '$.status', ?"
            params: list[Any] = [to, to]
            if allowed == "pending":
                sql += ", '$.decided_at', ?"
                params.append(self._clock())
            sql += ") WHERE id = ? AND status = ?"
            params += [request_id, allowed]
            if call_hash is not None:
                sql += " AND call_hash = ?"
                params.append(call_hash)
            return conn.execute(sql, params).rowcount == 1

        changed = await self._write(update)
        if changed:
            self._waiters.notify(request_id)
        return changed

    async def consume(self, request_id: str, call_hash: str) -> bool:
        return await self._transition(request_id, "approved", "consumed", call_hash)

    async def expire(self, request_id: str) -> bool:
        return await self._transition(request_id, "pending", "expired")

    async def cancel(self, request_id: str) -> bool:
        return await self._transition(request_id, "pending", "cancelled")
    # -- grants ------------------------------------------------------------------------
    async def add_grant(self, grant: Grant) -> None:
        doc = _dumps(grant_to_dict(grant))

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO grants (id, principal, kind, expires_at, doc)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (grant.id, grant.principal, grant.kind, grant.expires_at, doc),
                )
            except sqlite3.IntegrityError:
                raise StoreError("a grant with this id already exists") from None

        await self._write(insert)

    async def use_grant(self, query: GrantQuery, *, now: float) -> Grant | None:
        def use(conn: sqlite3.Connection) -> Grant | None:
            rows = conn.execute(
                "SELECT doc FROM grants WHERE principal = ? AND kind = ? AND expires_at > ?",
                (query.principal, query.kind, now),
            ).fetchall()
            candidates = [
                g for g in (grant_from_dict(json.loads(doc)) for (doc,) in rows)
                if grant_covers(g, query, now)
            ]
            if not candidates:
                return None
            grant = min(candidates, key=grant_preference)
            used = dataclasses.replace(grant, uses=grant.uses + 1)
            if grant.scope == "once":
                cursor = conn.execute("DELETE FROM grants WHERE id = ?", (grant.id,))
            else:
                cursor = conn.execute(
                    "UPDATE grants SET doc = ? WHERE id = ?",
                    (_dumps(grant_to_dict(used)), grant.id),
                )
            return used if cursor.rowcount == 1 else None

        return await self._write(use)

    async def list_grants(self, now: float | None = None) -> Sequence[Grant]:
        at = self._clock() if now is None else now
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT doc FROM grants WHERE expires_at > ? ORDER BY rowid", (at,)
            ).fetchall()
        )
        return [grant_from_dict(json.loads(doc)) for (doc,) in rows]

    async def revoke_grant(self, grant_id: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM grants WHERE id = ?", (grant_id,)).rowcount == 1
        )

    # -- re-authentication -------------------------------------------------------------
    async def record_reauth(self, subject: str, method: str, at: float) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO reauth (subject, method, at) VALUES (?, ?, ?)"
                " ON CONFLICT (subject, method) DO UPDATE SET at = max(at, excluded.at)",
                (subject, method, at),
            )
        )

    async def last_reauth(self, subject: str, method: str) -> float | None:
        return await self._scalar(
            "SELECT at FROM reauth WHERE subject = ? AND method = ?", subject, method
        )

    async def set_secret(self, name: str, value: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        )

    async def get_secret(self, name: str) -> str | None:
        return await self._scalar("SELECT value FROM secrets WHERE name = ?", name)

    async def use_otp(self, subject: str, timecode: int) -> bool:
        def use(conn: sqlite3.Connection) -> bool:
            fresh = conn.execute(
                "INSERT OR IGNORE INTO otp_used (subject, timecode) VALUES (?, ?)",
                (subject, timecode),
            ).rowcount == 1
            conn.execute(
                "DELETE FROM otp_used WHERE subject = ? AND timecode < ?",
                (subject, timecode - _OTP_KEEP_STEPS),
            )
            return fresh

        return await self._write(use)

    async def record_failure(self, subject: str, at: float, window: float) -> int:
        def record(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO failures (subject, at) VALUES (?, ?)", (subject, at))
            conn.execute(
                "DELETE FROM failures WHERE subject = ? AND at <= ?", (subject, at - window)
            )
            return conn.execute(
                "SELECT count(*) FROM failures WHERE subject = ?", (subject,)
            ).fetchone()[0]

        return await self._write(record)

    async def clear_failures(self, subject: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM failures WHERE subject = ?", (subject,))
        )

    async def set_lockout(self, subject: str, until: float) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO lockouts (subject, until) VALUES (?, ?)"
                " ON CONFLICT (subject) DO UPDATE SET until = excluded.until",
                (subject, until),
            )
        )

    async def lockout_until(self, subject: str) -> float | None:
        return await self._scalar("SELECT until FROM lockouts WHERE subject = ?", subject)

    # -- risk signals ------------------------------------------------------------------
    async def record_event(self, key: str, at: float) -> None:
        await self._write(
            lambda conn: conn.execute("INSERT INTO events (key, at) VALUES (?, ?)", (key, at))
        )

    async def count_events(self, key: str, since: float) -> int:
        count = await self._scalar(
            "SELECT count(*) FROM events WHERE key = ? AND at >= ?", key, since
        )
        return int(count or 0)

    async def first_use(self, principal: str, server: str, tool: str) -> bool:
        return await self._write(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO first_use (principal, server, tool) VALUES (?, ?, ?)",
                (principal, server, tool),
            ).rowcount == 1
        )

    async def set_cooldown(self, key: str, until: float, reason: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO cooldowns (key, until, reason) VALUES (?, ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET until = excluded.until, reason = excluded.reason",
                (key, until, reason),
            )
        )

    async def get_cooldown(self, key: str, now: float) -> str | None:
        return await self._scalar(
            "SELECT reason FROM cooldowns WHERE key = ? AND until > ?", key, now
        )

    # -- MCP tool pins -----------------------------------------------------------------
    async def get_pin(self, server: str, tool: str) -> str | None:
        return await self._scalar(
            "SELECT hash FROM pins WHERE server = ? AND tool = ?", server, tool
        )

    async def set_pin(self, server: str, tool: str, definition_hash: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO pins (server, tool, hash) VALUES (?, ?, ?)"
                " ON CONFLICT (server, tool) DO UPDATE SET hash = excluded.hash",
                (server, tool, definition_hash),
            )
        )

    async def put_definition(self, definition_hash: str, definition: str) -> None:
        await self._write(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO definitions (hash, doc) VALUES (?, ?)",
            (definition_hash, definition)))

    async def get_definition(self, definition_hash: str) -> str | None:
        row = await self._read(lambda conn: conn.execute(
            "SELECT doc FROM definitions WHERE hash = ?", (definition_hash,)).fetchone())
        return None if row is None else row[0]

    async def list_pins(self) -> Sequence[tuple[str, str, str]]:
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT server, tool, hash FROM pins ORDER BY server, tool"
            ).fetchall()
        )
        return [(s, t, h) for s, t, h in rows]

    async def _scalar(self, sql: str, *params: Any) -> Any:
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return None if row is None else row[0]
