"""PostgreSQL store: one state shared by every agentguard replica behind a load balancer.

- Every transition that matters for security is one conditional statement whose row count says
  who won (``UPDATE ... WHERE status = 'pending'``, ``DELETE`` of a single-use grant,
  ``INSERT ... ON CONFLICT DO NOTHING`` of a TOTP step); a vote locks its row
  (``SELECT ... FOR UPDATE``) so that the shared vote rules run on the latest state. Two replicas
  racing on one request see exactly one winner.
- A request leaving ``pending`` sends ``NOTIFY`` in the same statement, hence the same
  transaction: it is delivered only if the change commits. Each store keeps one dedicated
  connection that ``LISTEN``s and wakes its waiters, so a decision on any replica releases a call
  waiting on another within milliseconds; a slow poll remains as a safety net (a reconnecting
  listener may miss notifications).
- The schema (``agentguard`` unless told otherwise) is created and migrated on ``open``; a schema
  written by a newer agentguard is refused. See :mod:`agentguard.store._pg_schema`.
- Nothing is held in process memory: a replica killed while a call waits leaves the request
  ``pending`` (shown as ``expired`` once past its deadline), and ``consume`` stays single use
  across restarts.

psycopg's async connection pool runs on asyncio, so this store needs anyio's asyncio backend.
The pool and the listening connection live in the event loop that opened the store; every
operation called from another loop (a guard's synchronous callers are served in the guard's own
loop, next to an app's) is carried out there and awaited where it was called (see
:mod:`agentguard.store._pg_pool`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import psycopg

from agentguard.errors import ConflictError, StoreError
from agentguard.store._codec import (
    grant_from_dict,
    grant_to_dict,
    request_from_dict,
    request_to_dict,
)
from agentguard.store._pg_pool import Database, describe
from agentguard.store._pg_schema import DEFAULT_SCHEMA, SCHEMA_VERSION, Names
from agentguard.store._rules import (
    Waiters,
    apply_vote,
    grant_covers,
    grant_preference,
    present,
    wait_until_settled,
)
from agentguard.store.base import VoteResult
from agentguard.types import ApprovalRequest, ApprovalVote, Grant, GrantQuery, RequestStatus

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

# The listener wakes waiters at once; polling only covers a listener that is reconnecting.
_POLL = 2.0
_OTP_KEEP_STEPS = 1000
# Second key of the advisory lock that serialises failure counting per subject.
_FAILURES_LOCK = 0x6661696C

_COLUMNS = "status, decided_at, doc"


def _dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _request(status: str, decided_at: float | None, doc: str) -> ApprovalRequest:
    data = json.loads(doc)
    # The columns are what conditional UPDATEs test and set, so they are the truth.
    data["status"] = status
    if decided_at is not None:
        data["decided_at"] = decided_at
    return request_from_dict(data)


P = ParamSpec("P")
T = TypeVar("T")


def _at_home(
    method: Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, T]]:
    """Run a store operation in the loop that holds the store's connections."""

    @functools.wraps(method)
    async def at_home(self: PostgresStore, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.run(functools.partial(method, self, *args, **kwargs))

    return cast("Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, T]]", at_home)


def _grant(uses: int, doc: str) -> Grant:
    return dataclasses.replace(grant_from_dict(json.loads(doc)), uses=uses)


class PostgresStore:
    """A :class:`~agentguard.store.Store` in PostgreSQL, shared by any number of replicas.

    Grants, pending approvals, TOTP replay records, failures and lockouts, risk-signal events,
    cooldowns and MCP tool pins all live in ``schema``; every replica pointed at the same
    database and schema sees the same state, and a decision taken through any of them wakes
    waiting calls on all of them.

    Args:
        dsn: libpq connection string or URL (``postgresql://user@host:5432/db``).
        schema: Schema holding the tables; created if missing. Letters, digits and ``_``.
        clock: Source of the current Unix time (inject a manual clock in tests).
        pool_min: Connections kept open in the pool.
        pool_max: Most connections the pool opens (the listener uses one more).
        timeout: Seconds to wait for a connection before an operation fails (fail closed).
        poll: Longest pause between reads while a call waits: the safety net should a
            notification be missed (the listening connection was being re-established).

    Raises:
        ConfigError: ``schema`` is not an acceptable name.
    """

    def __init__(
        self, dsn: str, *, schema: str = DEFAULT_SCHEMA, clock: Callable[[], float] = time.time,
        pool_min: int = 1, pool_max: int = 10, timeout: float = 10.0, poll: float = _POLL,
    ) -> None:
        self._names = Names(schema)
        self.dsn = dsn
        self.schema = schema
        self._clock = clock
        self._poll = poll
        self._waiters = Waiters()
        self._db = Database(dsn, self._names, self._waiters, pool_min=pool_min,
                            pool_max=pool_max, timeout=timeout)
        q = self._names.q
        self._sql = {
            "insert": q("INSERT INTO {s}.requests (id, status, call_hash, created_at, expires_at,"
                        " decided_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s)"),
            "get": q(f"SELECT {_COLUMNS} FROM {{s}}.requests WHERE id = %s"),
            "lock": q(f"SELECT {_COLUMNS} FROM {{s}}.requests WHERE id = %s FOR UPDATE"),
            "vote": q("WITH u AS (UPDATE {s}.requests SET status = %s, decided_at = %s, doc = %s"
                      " WHERE id = %s AND status = 'pending' RETURNING id, status)"
                      " SELECT CASE WHEN status <> 'pending' THEN pg_notify(%s, id) END FROM u"),
            "settle": q("WITH u AS (UPDATE {s}.requests SET status = %s, decided_at = %s"
                        " WHERE id = %s AND status = 'pending' RETURNING id)"
                        " SELECT pg_notify(%s, id) FROM u"),
            "consume": q("UPDATE {s}.requests SET status = 'consumed' WHERE id = %s"
                         " AND status = 'approved' AND call_hash = %s"),
            "list": q(f"SELECT {_COLUMNS} FROM {{s}}.requests WHERE {{where}}"
                      " ORDER BY created_at DESC, seq DESC LIMIT %s"),
            "pending": q("SELECT count(*) FROM {s}.requests WHERE status = 'pending'"
                         " AND expires_at > %s AND (doc::jsonb #>> '{call,principal}') = %s"
                         " AND (doc::jsonb ->> 'privilege') = %s"),
        }

    def __repr__(self) -> str:
        return f"PostgresStore({describe(self.dsn)!r}, schema={self.schema!r})"

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create or migrate the schema and start listening. Idempotent.

        Raises:
            StoreError: the server does not answer, or the schema is newer than supported.
        """
        await self._db.open()

    async def close(self) -> None:
        """Stop listening and close the pool. Idempotent; a later call reopens."""
        await self._db.close()

    # -- plumbing ------------------------------------------------------------------------
    def _connection(self, transaction: bool = False) -> AbstractAsyncContextManager[Any]:
        return self._db.connection(transaction)

    async def _fetchone(self, query: str, *params: Any) -> Any:
        async with self._connection() as conn:
            return await (await conn.execute(query, params)).fetchone()

    async def _fetchall(self, query: str, *params: Any) -> list[Any]:
        async with self._connection() as conn:
            return await (await conn.execute(query, params)).fetchall()

    async def _rowcount(self, query: str, *params: Any) -> int:
        async with self._connection() as conn:
            return (await conn.execute(query, params)).rowcount

    async def _scalar(self, query: str, *params: Any) -> Any:
        row = await self._fetchone(self._names.q(query), *params)
        return None if row is None else row[0]

    async def _execute(self, query: str, *params: Any) -> None:
        await self._rowcount(self._names.q(query), *params)

    # -- approval requests ---------------------------------------------------------------
    @_at_home
    async def create_request(self, request: ApprovalRequest) -> None:
        doc = _dumps(request_to_dict(request))
        async with self._connection() as conn:
            try:
                await conn.execute(self._sql["insert"], (
                    request.id, request.status, request.call_hash, request.created_at,
                    request.expires_at, request.decided_at, doc))
            except psycopg.errors.UniqueViolation:
                raise StoreError("an approval request with this id already exists") from None

    @_at_home
    async def get_request(self, request_id: str) -> ApprovalRequest | None:
        row = await self._fetchone(self._sql["get"], request_id)
        return None if row is None else present(_request(*row), self._clock())

    @_at_home
    async def list_requests(
        self, status: RequestStatus | None = None, limit: int = 100, *,
        call_hash: str | None = None,
    ) -> Sequence[ApprovalRequest]:
        now = self._clock()
        where: str
        params: tuple[Any, ...]
        if status is None:
            where, params = "true", ()
        elif status == "pending":
            where, params = "status = 'pending' AND expires_at > %s", (now,)
        elif status == "expired":
            where, params = (
                "(status = 'expired' OR (status = 'pending' AND expires_at <= %s))", (now,))
        else:
            where, params = "status = %s", (status,)
        if call_hash is not None:
            where, params = f"call_hash = %s AND {where}", (call_hash, *params)
        query = self._sql["list"].replace("{where}", where)
        rows = await self._fetchall(query, *params, max(0, limit))
        return [present(_request(*row), now) for row in rows]

    @_at_home
    async def count_pending(self, principal: str, privilege: str) -> int:
        row = await self._fetchone(self._sql["pending"], self._clock(), principal, privilege)
        return int(row[0])

    @_at_home
    async def record_vote(self, request_id: str, vote: ApprovalVote) -> VoteResult:
        async with self._connection(transaction=True) as conn:
            row = await (await conn.execute(self._sql["lock"], (request_id,))).fetchone()
            if row is None:
                raise ConflictError("no approval request with this id")
            updated, counted = apply_vote(_request(*row), vote, self._clock())
            if counted:
                cur = await conn.execute(self._sql["vote"], (
                    updated.status, updated.decided_at, _dumps(request_to_dict(updated)),
                    request_id, self._names.channel))
                if cur.rowcount != 1:  # pragma: no cover - excluded by the row lock
                    raise ConflictError("approval request changed while voting")
        if updated.status != "pending":
            self._waiters.notify(request_id)
        return VoteResult(updated, counted)

    @_at_home
    async def wait_for_change(self, request_id: str, timeout: float) -> ApprovalRequest | None:
        return await wait_until_settled(
            self.get_request, self._waiters, request_id, timeout, first_poll=self._poll / 4,
            max_poll=self._poll,
        )

    async def _settle(self, request_id: str, to: str) -> bool:
        changed = await self._rowcount(
            self._sql["settle"], to, self._clock(), request_id, self._names.channel
        ) == 1
        if changed:
            self._waiters.notify(request_id)
        return changed

    @_at_home
    async def consume(self, request_id: str, call_hash: str) -> bool:
        return await self._rowcount(self._sql["consume"], request_id, call_hash) == 1

    @_at_home
    async def expire(self, request_id: str) -> bool:
        return await self._settle(request_id, "expired")

    @_at_home
    async def cancel(self, request_id: str) -> bool:
        return await self._settle(request_id, "cancelled")

    # -- grants ----------------------------------------------------------------------------
    @_at_home
    async def add_grant(self, grant: Grant) -> None:
        doc = _dumps(grant_to_dict(grant))
        async with self._connection() as conn:
            try:
                await conn.execute(self._names.q(
                    "INSERT INTO {s}.grants (id, principal, kind, expires_at, uses, doc)"
                    " VALUES (%s, %s, %s, %s, %s, %s)"),
                    (grant.id, grant.principal, grant.kind, grant.expires_at, grant.uses, doc))
            except psycopg.errors.UniqueViolation:
                raise StoreError("a grant with this id already exists") from None

    @_at_home
    async def use_grant(self, query: GrantQuery, *, now: float) -> Grant | None:
        q = self._names.q
        taken: set[str] = set()
        while True:
            rows = await self._fetchall(
                q("SELECT id, uses, doc FROM {s}.grants"
                  " WHERE principal = %s AND kind = %s AND expires_at > %s"),
                query.principal, query.kind, now)
            candidates = [
                g for g in (_grant(uses, doc) for gid, uses, doc in rows if gid not in taken)
                if grant_covers(g, query, now)
            ]
            if not candidates:
                return None
            grant = min(candidates, key=grant_preference)
            # One conditional statement claims the grant; losing a race means it is gone.
            if grant.scope == "once":
                row = await self._fetchone(
                    q("DELETE FROM {s}.grants WHERE id = %s AND expires_at > %s"
                      " RETURNING uses + 1"), grant.id, now)
            else:
                row = await self._fetchone(
                    q("UPDATE {s}.grants SET uses = uses + 1 WHERE id = %s AND expires_at > %s"
                      " RETURNING uses"), grant.id, now)
            if row is not None:
                return dataclasses.replace(grant, uses=row[0])
            taken.add(grant.id)

    @_at_home
    async def list_grants(self, now: float | None = None) -> Sequence[Grant]:
        at = self._clock() if now is None else now
        rows = await self._fetchall(
            self._names.q("SELECT uses, doc FROM {s}.grants WHERE expires_at > %s ORDER BY seq"),
            at)
        return [_grant(uses, doc) for uses, doc in rows]

    @_at_home
    async def revoke_grant(self, grant_id: str) -> bool:
        return await self._rowcount(
            self._names.q("DELETE FROM {s}.grants WHERE id = %s"), grant_id) == 1

    # -- re-authentication -----------------------------------------------------------------
    @_at_home
    async def record_reauth(self, subject: str, method: str, at: float) -> None:
        await self._execute(
            "INSERT INTO {s}.reauth AS r (subject, method, at) VALUES (%s, %s, %s)"
            " ON CONFLICT (subject, method) DO UPDATE SET at = greatest(r.at, excluded.at)",
            subject, method, at)

    @_at_home
    async def last_reauth(self, subject: str, method: str) -> float | None:
        return await self._scalar(
            "SELECT at FROM {s}.reauth WHERE subject = %s AND method = %s", subject, method)

    @_at_home
    async def set_secret(self, name: str, value: str) -> None:
        await self._execute(
            "INSERT INTO {s}.secrets (name, value) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", name, value)

    @_at_home
    async def get_secret(self, name: str) -> str | None:
        return await self._scalar("SELECT value FROM {s}.secrets WHERE name = %s", name)

    @_at_home
    async def use_otp(self, subject: str, timecode: int) -> bool:
        q = self._names.q
        async with self._connection(transaction=True) as conn:
            fresh = (await conn.execute(
                q("INSERT INTO {s}.otp_used (subject, timecode) VALUES (%s, %s)"
                  " ON CONFLICT DO NOTHING"), (subject, timecode))).rowcount == 1
            await conn.execute(
                q("DELETE FROM {s}.otp_used WHERE subject = %s AND timecode < %s"),
                (subject, timecode - _OTP_KEEP_STEPS))
        return fresh

    @_at_home
    async def record_failure(self, subject: str, at: float, window: float) -> int:
        q = self._names.q
        async with self._connection(transaction=True) as conn:
            # Concurrent failures of one subject must each see the others, or a burst of
            # guesses across replicas could stay under the lockout threshold.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (_FAILURES_LOCK, f"{self.schema}|{subject}"))
            await conn.execute(q("INSERT INTO {s}.failures (subject, at) VALUES (%s, %s)"),
                               (subject, at))
            await conn.execute(q("DELETE FROM {s}.failures WHERE subject = %s AND at <= %s"),
                               (subject, at - window))
            row = await (await conn.execute(
                q("SELECT count(*) FROM {s}.failures WHERE subject = %s"), (subject,)
            )).fetchone()
        return int(row[0]) if row else 0

    @_at_home
    async def clear_failures(self, subject: str) -> None:
        await self._execute("DELETE FROM {s}.failures WHERE subject = %s", subject)

    @_at_home
    async def set_lockout(self, subject: str, until: float) -> None:
        await self._execute(
            "INSERT INTO {s}.lockouts (subject, until) VALUES (%s, %s)"
            " ON CONFLICT (subject) DO UPDATE SET until = excluded.until", subject, until)

    @_at_home
    async def lockout_until(self, subject: str) -> float | None:
        return await self._scalar("SELECT until FROM {s}.lockouts WHERE subject = %s", subject)

    # -- risk signals ----------------------------------------------------------------------
    @_at_home
    async def record_event(self, key: str, at: float) -> None:
        await self._execute("INSERT INTO {s}.events (key, at) VALUES (%s, %s)", key, at)

    @_at_home
    async def count_events(self, key: str, since: float) -> int:
        count = await self._scalar(
            "SELECT count(*) FROM {s}.events WHERE key = %s AND at >= %s", key, since)
        return int(count or 0)

    @_at_home
    async def first_use(self, principal: str, server: str, tool: str) -> bool:
        return await self._rowcount(self._names.q(
            "INSERT INTO {s}.first_use (principal, server, tool) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING"), principal, server, tool) == 1

    @_at_home
    async def set_cooldown(self, key: str, until: float, reason: str) -> None:
        await self._execute(
            "INSERT INTO {s}.cooldowns (key, until, reason) VALUES (%s, %s, %s)"
            " ON CONFLICT (key) DO UPDATE SET until = excluded.until, reason = excluded.reason",
            key, until, reason)

    @_at_home
    async def get_cooldown(self, key: str, now: float) -> str | None:
        return await self._scalar(
            "SELECT reason FROM {s}.cooldowns WHERE key = %s AND until > %s", key, now)

    # -- MCP tool pins ---------------------------------------------------------------------
    @_at_home
    async def get_pin(self, server: str, tool: str) -> str | None:
        return await self._scalar(
            "SELECT hash FROM {s}.pins WHERE server = %s AND tool = %s", server, tool)

    @_at_home
    async def set_pin(self, server: str, tool: str, definition_hash: str) -> None:
        await self._execute(
            "INSERT INTO {s}.pins (server, tool, hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (server, tool) DO UPDATE SET hash = excluded.hash",
            server, tool, definition_hash)

    @_at_home
    async def put_definition(self, definition_hash: str, definition: str) -> None:
        await self._execute(
            "INSERT INTO {s}.definitions (hash, doc) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            definition_hash, definition)

    @_at_home
    async def get_definition(self, definition_hash: str) -> str | None:
        return await self._scalar(
            "SELECT doc FROM {s}.definitions WHERE hash = %s", definition_hash)

    @_at_home
    async def list_pins(self) -> Sequence[tuple[str, str, str]]:
        rows = await self._fetchall(
            self._names.q("SELECT server, tool, hash FROM {s}.pins ORDER BY server, tool"))
        return [(s, t, h) for s, t, h in rows]
