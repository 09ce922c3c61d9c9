"""Group commit: many concurrent audit records made durable by one write and one sync.

A sink that supports it (:class:`~agentguard.audit.JsonlAuditLog`,
:class:`~agentguard.audit.postgres.PostgresAuditLog`) owns one :class:`GroupCommitter`: a
writer thread that takes every record queued since its last write, chains them, and makes them
durable together (one ``write`` and one ``fdatasync`` for JSONL, one transaction for
PostgreSQL). The event loop never waits on the disk or the server; it only queues.

Records of one guarded call are tracked by an :class:`AuditLedger`. ``await ledger.durable()``
returns once every record the call submitted is durable, and raises :class:`AuditError` if
any of them was not written: the guard then refuses the call (fail closed).

**Nothing false is recorded after a failure.** When a group write fails, nothing of it stays
in the log, every ledger with a record in it is marked failed, and so is every ledger with a
record queued behind it (those were submitted before the failure was known). Both happen
under the lock :meth:`GroupCommitter.submit` takes, and ``submit`` refuses a record for a
ledger already marked failed: a call whose ``challenge.created`` was lost can never get its
``call.executed`` into the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agentguard.errors import AuditError

__all__ = [
    "AuditLedger",
    "GroupCommitted",
    "GroupCommitter",
    "current_ledger",
    "record_event",
]

#: The ledger of the guarded call being authorized in this task (set by the guard).
current_ledger: contextvars.ContextVar[AuditLedger | None] = contextvars.ContextVar(
    "agentguard_audit_ledger", default=None)


class AuditLedger:
    """The audit records one guarded call submitted, and whether all are durable.

    Thread-safe; :meth:`durable` may be awaited on any asyncio loop (and falls back to a
    worker thread under another anyio backend).

    Attributes:
        error: The first write failure of one of its records, or None.
    """

    __slots__ = ("_cond", "_open", "_waiters", "error")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._open = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.error: AuditError | None = None

    @property
    def pending(self) -> int:
        """Records submitted and not yet settled."""
        return self._open

    def _added(self) -> None:
        with self._cond:
            self._open += 1

    def _failed(self, error: AuditError) -> None:
        with self._cond:
            if self.error is None:
                self.error = error

    def _settled(self, count: int = 1) -> list[tuple[asyncio.AbstractEventLoop,
                                                     asyncio.Future[None]]]:
        """Count ``count`` records settled; return the async waiters to wake (the caller
        wakes them, one ``call_soon_threadsafe`` per loop for a whole group)."""
        with self._cond:
            self._open -= count
            if self._open > 0 and self.error is None:
                return []
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        return waiters

    def _raise(self) -> None:
        if self.error is not None:
            # A fresh exception per waiter: several tasks may raise it at once.
            raise AuditError(str(self.error)) from self.error

    async def durable(self) -> None:
        """Return once every record submitted so far is durable.

        Raises:
            AuditError: one of them was not written (nothing more of this call is accepted).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another anyio backend: wait in a worker thread
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.wait)
            return
        while True:
            with self._cond:
                if self.error is not None or self._open <= 0:
                    break
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            await future
        self._raise()

    def wait(self, timeout: float | None = None) -> None:
        """Block until every record submitted so far is durable (synchronous callers).

        Raises:
            AuditError: one was not written, or ``timeout`` passed first.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self.error is not None or self._open <= 0,
                                       timeout):
                raise AuditError(f"the audit write did not finish within {timeout} s")
        self._raise()


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _wake_all(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_wake, futures)


class _Entry:
    __slots__ = ("data", "ledger", "record", "written")

    def __init__(self, data: dict[str, Any], ledger: AuditLedger,
                 written: Callable[[dict[str, Any]], object] | None) -> None:
        self.data = data
        self.ledger = ledger
        self.written = written
        self.record: dict[str, Any] | None = None


class GroupCommitter:
    """One writer thread per sink that makes queued records durable in groups.

    Args:
        commit: Chains and durably writes a list of prepared events, all or none; returns the
            stored records in order. Raises on failure (anything it raises fails the group).
        name: The writer thread's name.
        max_batch: Most records in one group.
    """

    def __init__(self, commit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], *,
                 name: str, max_batch: int = 8192) -> None:
        self._commit = commit
        self._name = name
        self._max = max_batch
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Entry] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    def submit(self, data: dict[str, Any], ledger: AuditLedger, *,
               written: Callable[[dict[str, Any]], object] | None = None) -> _Entry:
        """Queue one prepared event for the next group; never waits for I/O.

        Args:
            data: The prepared (redacted, JSON-safe) event.
            ledger: The call's ledger.
            written: Called on the writer thread with the stored record once it is durable
                (telemetry); what it raises is ignored.

        Raises:
            AuditError: the sink is closed, or an earlier record of ``ledger`` failed.
        """
        entry = _Entry(data, ledger, written)
        with self._cond:
            if self._closed:
                raise AuditError(f"the audit log is closed ({self._name})")
            if ledger.error is not None:
                raise AuditError(f"an earlier audit record of this call was not written "
                                 f"({ledger.error}): nothing more is recorded for it")
            if self._thread is None or self._pid != os.getpid():
                # First use, or a forked child (threads do not survive fork): a new writer.
                self._queue, self._pid = [], os.getpid()
                self._thread = threading.Thread(target=self._run, name=self._name,
                                                daemon=True)
                self._thread.start()
            ledger._added()
            self._queue.append(entry)
            if len(self._queue) == 1:
                self._cond.notify()
        return entry

    def close(self) -> None:
        """Write what is queued, then stop the writer. Later submits raise."""
        with self._cond:
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            try:
                records = self._commit([entry.data for entry in batch])
            except BaseException as exc:  # any failure fails the group: fail closed
                error = exc if isinstance(exc, AuditError) else AuditError(
                    f"the audit write failed: {type(exc).__name__}: {exc}")
                with self._cond:
                    doomed, self._queue = self._queue, []
                    for entry in batch + doomed:
                        entry.ledger._failed(error)
                _wake_all([w for entry in batch + doomed for w in entry.ledger._settled()])
                continue
            counts: dict[int, tuple[AuditLedger, int]] = {}
            for entry, record in zip(batch, records, strict=True):
                entry.record = record
                if entry.written is not None:
                    with contextlib.suppress(Exception):  # telemetry never fails a write
                        entry.written(record)
                known = counts.get(id(entry.ledger))
                counts[id(entry.ledger)] = (entry.ledger, 1 if known is None else known[1] + 1)
            _wake_all([w for ledger, count in counts.values() for w in ledger._settled(count)])


def record_event(sink: Any, event: Mapping[str, Any], *, durable: bool = True) -> None:
    """Record ``event`` in ``sink`` the way the current context needs.

    Inside a guarded call (:data:`current_ledger` set) and with a sink that has ``submit``,
    the event is queued for group commit and the call's ledger tracks it (``durable=False``:
    a throw-away ledger, for a record whose loss must not refuse the call). Otherwise it is
    appended synchronously, as every :class:`~agentguard.audit.base.AuditSink` can.

    Raises:
        AuditError: the event was refused or (synchronously) not written.
    """
    ledger = current_ledger.get()
    submit = getattr(sink, "submit", None)
    if ledger is None or submit is None:
        sink.append(event)
        return
    submit(event, ledger if durable else AuditLedger())


class GroupCommitted:
    """What a group-committing sink shares: the three ways in (one record now, one queued,
    one awaited), over the sink's ``_commit`` (chain and make a batch durable, all or none),
    its ``_group`` (a :class:`GroupCommitter` calling ``_commit``) and its ``_redactor``."""

    _group: GroupCommitter
    _redactor: Any
    _commit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Redact, chain and make one event durable now; return the stored record.

        Raises:
            AuditError: the event is not a mapping with a string ``type``, the log is closed,
                or the write failed (nothing was written then).
        """
        return self._commit([self._redactor.prepare(event)])[0]

    def submit(self, event: Mapping[str, Any], ledger: AuditLedger, *,
               written: Callable[[dict[str, Any]], object] | None = None) -> None:
        """Redact ``event`` and queue it for the next group write; never waits.

        ``await ledger.durable()`` returns once it (and the ledger's other records) is
        durable, and raises :class:`AuditError` if it was not.

        Raises:
            AuditError: the event is not a mapping with a string ``type``, the log is closed,
                or an earlier record of ``ledger`` was not written.
        """
        self._group.submit(self._redactor.prepare(event), ledger, written=written)

    async def append_async(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Group-commit one event without blocking the event loop; return the stored record.

        Raises:
            AuditError: as :meth:`submit`, or the group write failed.
        """
        ledger = AuditLedger()
        entry = self._group.submit(self._redactor.prepare(event), ledger)
        await ledger.durable()
        assert entry.record is not None
        return entry.record
