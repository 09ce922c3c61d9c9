"""Connections of the PostgreSQL store: a pool and a listening connection per event loop.

psycopg's async pool runs on asyncio and belongs to the loop it was opened in. The sync entry
points of agentguard run one event loop per call (maybe in several threads at once), so
:class:`Database` keeps a pool and a listener for each running loop and closes those an ended
loop stranded.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from agentguard.errors import StoreError
from agentguard.store._pg_schema import SCHEMA_VERSION, Names, check_version
from agentguard.store._rules import Waiters

__all__ = ["Database", "describe"]

_KEEPALIVE = 30.0


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without user or password, for messages."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    host, port, db = info.get("host", "localhost"), info.get("port", "5432"), info.get("dbname")
    return f"{host}:{port}/{db or ''}"


async def migrate(conn: psycopg.AsyncConnection[Any], names: Names) -> None:
    """Create or upgrade the schema; refuse a newer one (``StoreError``)."""
    # Fast path without the lock or CREATE rights: the schema is already current.
    cur = await conn.execute("SELECT to_regclass(%s)", (names.q("{s}.schema_version"),))
    row = await cur.fetchone()
    if row is not None and row[0] is not None:
        found = await (await conn.execute(names.version_sql())).fetchone()
        if check_version(names.schema, found[0] if found else None) == SCHEMA_VERSION:
            return
    async with conn.transaction():
        for statement in names.prelude():
            await conn.execute(statement)
        found = await (await conn.execute(names.version_sql())).fetchone()
        for statement in names.upgrade(check_version(names.schema, found[0] if found else None)):
            await conn.execute(statement)


class _Listener:
    """A dedicated connection that ``LISTEN``s on the store's channel and wakes local waiters."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._db = link.db
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"agentguard-listen-{self._db.names.schema}")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        db = self._db
        conn = await psycopg.AsyncConnection.connect(
            db.dsn, autocommit=True, application_name=db.listener_name)
        await self._link.track(conn)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(db.names.channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await self._connect()
                async for note in self._conn.notifies(timeout=_KEEPALIVE):
                    self._db.waiters.notify(note.payload)
                await self._conn.execute("SELECT 1")  # a silently dead link shows up here
                delay = 0.05
            except psycopg.Error:
                # Notifications sent meanwhile are lost; the waiters' slow poll covers them.
                if self._conn is not None:
                    with suppress(psycopg.Error):
                        await self._conn.close()
                self._conn = None
                await anyio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            with suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None


class _Link:
    """The pool and the listener of one store object in one event loop."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Every connection opened, so that they can be closed if stranded in an ended loop.
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            db.dsn, min_size=db.pool_min, max_size=db.pool_max, open=False,
            kwargs={"autocommit": True}, timeout=db.timeout, configure=self.track,
            name=f"agentguard-{db.names.schema}",
        )
        self.listener = _Listener(self)

    async def track(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Remember a new connection (also the pool's ``configure`` hook)."""
        self.opened.add(conn)

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=self.db.timeout)
            async with self.pool.connection() as conn:
                await migrate(conn, self.db.names)
            await self.listener.start()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(
                    f"PostgreSQL store at {describe(self.db.dsn)} cannot be opened: {exc}"
                ) from exc
            raise

    async def close(self) -> None:
        await self.listener.stop()
        await self.pool.close()

    def strand(self) -> None:
        """Close the connections of a link whose event loop has ended (its tasks are gone,
        so the async way is closed too); finishing the libpq handles ends the sessions."""
        for conn in list(self.opened):
            conn.pgconn.finish()
        self.opened.clear()


class Database:
    """The connections of one store object: a pool and a listener per running event loop.

    Args:
        dsn: libpq connection string or URL.
        names: The schema's names.
        waiters: Woken with the request id of each notification.
        pool_min: Connections kept open.
        pool_max: Most connections in the pool.
        timeout: Seconds to wait for a connection.
    """

    def __init__(
        self, dsn: str, names: Names, waiters: Waiters, *, pool_min: int, pool_max: int,
        timeout: float,
    ) -> None:
        self.dsn = dsn
        self.names = names
        self.waiters = waiters
        self.listener_name = f"agentguard listener {names.schema}"[:63]
        self.pool_min, self.pool_max = pool_min, max(pool_min, pool_max)
        self.timeout = timeout
        self._links: dict[asyncio.AbstractEventLoop, _Link] = {}
        self._locks: dict[asyncio.AbstractEventLoop, anyio.Lock] = {}

    async def _link(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            return link
        async with self._locks.setdefault(loop, anyio.Lock()):
            link = self._links.get(loop)
            if link is None:
                self._sweep()
                link = _Link(self)
                await link.open()
                self._links[loop] = link
        return link

    def _sweep(self) -> None:
        for loop in [loop for loop in self._links if loop.is_closed()]:
            self._links.pop(loop).strand()
            self._locks.pop(loop, None)

    async def open(self) -> None:
        """Open the pool, migrate the schema and start listening. Idempotent per loop.

        Raises:
            StoreError: the server does not answer, or the schema is newer than supported.
        """
        await self._link()

    async def close(self) -> None:
        """Close this loop's pool and listener (and what ended loops left). Idempotent."""
        self._sweep()
        link = self._links.pop(asyncio.get_running_loop(), None)
        if link is not None:
            await link.close()

    @asynccontextmanager
    async def connection(self, transaction: bool = False) -> AsyncIterator[Any]:
        """A pooled connection (in a transaction if asked); psycopg errors become
        ``StoreError``."""
        link = await self._link()
        try:
            async with link.pool.connection() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store at {describe(self.dsn)} failed: {exc}") from exc
