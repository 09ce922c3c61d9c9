"""Connections of the PostgreSQL store: one pool and one listening connection, at home in the
event loop that opened them.

psycopg's async pool and connections belong to the asyncio loop they were opened in. One
store object may nevertheless be used from two loops at once: an app's own loop (async tools)
and the guard's portal loop, which serves every synchronous caller (see
:mod:`agentguard._portal`). The model:

- **One home.** The first loop to use the store opens the pool and the listener there; that
  loop is the store's home until the store is closed.
- **Bridged, not duplicated.** A call made from another loop is run in the home loop
  (``asyncio.run_coroutine_threadsafe``) and awaited where it was made; cancelling the caller
  cancels it at home. Every query, every wait and every wake-up therefore happens in one loop,
  where the listener's notifications reach the waiters directly.
- **A home that is gone.** If the home loop ended without closing the store, its connections
  are finished and the next caller's loop becomes the home. A home loop that is alive but not
  running cannot serve anyone: calls fail closed with ``StoreError``. In a forked child the
  parent's connections are left alone (psycopg does not close them in a child) and the child
  opens its own.

Why not a pool per loop (as before): twice the connections and listeners for a mixed app, and
a decision voted in one loop woke waiters of the other only by polling.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from agentguard.errors import StoreError
from agentguard.store._pg_schema import SCHEMA_VERSION, Names, check_version
from agentguard.store._rules import Waiters

__all__ = ["Database", "describe"]

T = TypeVar("T")

_KEEPALIVE = 30.0
#: Seconds between looks at the home loop while a bridged call is in flight.
_HOME_CHECK = 1.0


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
    """The pool and the listener of one store object, in its home loop."""

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.db = db
        self.loop = loop
        self.pid = os.getpid()
        #: Done once ``open`` has finished (its result or its error), for callers that wait.
        self.ready: Future[None] = Future()
        self.up = False
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
    """The connections of one store object, at home in one event loop (see the module
    docstring).

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
        self._home: _Link | None = None
        # Guards the choice of home between loops (threads); never held across an await.
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` in the home loop (opening the store there first if needed): here
        when this is the home loop, bridged to it from any other loop."""
        loop = asyncio.get_running_loop()
        link = self._home
        if link is None or link.loop is not loop or not link.up or link.pid != os.getpid():
            link = await self._link(loop)
            if link.loop is not loop:
                return await _bridged(fn, link.loop, self.dsn)
        return await fn()

    async def _link(self, loop: asyncio.AbstractEventLoop) -> _Link:
        """The home link, once open; opened in ``loop`` when there is none."""
        with self._lock:
            link = self._home
            if link is not None and not self._usable(link):
                self._home = link = None
            opening = link is None
            if link is None:
                link = self._home = _Link(self, loop)
        if opening:
            try:
                await link.open()
            except BaseException as exc:
                with self._lock:
                    if self._home is link:
                        self._home = None
                link.ready.set_exception(exc if isinstance(exc, Exception) else StoreError(
                    f"opening the PostgreSQL store at {describe(self.dsn)} was interrupted"))
                raise
            link.up = True
            link.ready.set_result(None)
        else:
            await asyncio.wrap_future(link.ready)
            if not link.loop.is_running() and link.loop is not loop:
                raise StoreError(
                    f"the event loop that opened the PostgreSQL store at {describe(self.dsn)} "
                    "is not running; close the store in that loop or let it run")
        return link

    @staticmethod
    def _usable(link: _Link) -> bool:
        """False for a home that is gone: another process's, or a loop that has ended."""
        if link.pid != os.getpid():
            return False  # forked child: the parent's connections are not ours to touch
        if link.loop.is_closed():
            link.strand()
            return False
        return not link.ready.done() or link.up

    async def open(self) -> None:
        """Open the pool, migrate the schema and start listening, in this loop unless the
        store is already at home in another. Idempotent.

        Raises:
            StoreError: the server does not answer, or the schema is newer than supported.
        """
        await self._link(asyncio.get_running_loop())

    async def close(self) -> None:
        """Stop listening and close the pool (in the home loop, from wherever called).
        Idempotent; a later use opens the store again."""
        with self._lock:
            link, self._home = self._home, None
        if link is None or link.pid != os.getpid():
            return
        loop = asyncio.get_running_loop()
        if link.loop is loop:
            await link.close()
        elif link.loop.is_running():
            await _bridged(link.close, link.loop, self.dsn)
        else:
            link.strand()  # its loop cannot run the async close any more

    @asynccontextmanager
    async def connection(self, transaction: bool = False) -> AsyncIterator[Any]:
        """A pooled connection (in a transaction if asked); psycopg errors become
        ``StoreError``. Only in the home loop: reach it through :meth:`run`."""
        link = self._home
        if link is None or link.loop is not asyncio.get_running_loop():
            link = await self._link(asyncio.get_running_loop())
            if link.loop is not asyncio.get_running_loop():  # pragma: no cover - a bug
                raise StoreError("PostgreSQL connection used outside the store's home loop")
        try:
            async with link.pool.connection() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store at {describe(self.dsn)} failed: {exc}") from exc


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


async def _bridged(fn: Callable[[], Awaitable[T]], home: asyncio.AbstractEventLoop,
                   dsn: str) -> T:
    """Await ``fn()`` run in the ``home`` loop; cancelling the caller cancels it there."""
    future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(fn), home))
    try:
        while True:
            # A loop that ends never runs what was handed to it: look now and then.
            done, _ = await asyncio.wait({future}, timeout=_HOME_CHECK)
            if done:
                if future.cancelled():  # by the home loop, not by our caller: it is ending
                    raise StoreError(f"the event loop holding the PostgreSQL store at "
                                     f"{describe(dsn)} cancelled a call handed to it")
                return future.result()
            if home.is_closed():
                raise StoreError(f"the event loop holding the PostgreSQL store at {describe(dsn)}"
                                 " ended while a call was handed to it")
    finally:
        future.cancel()
