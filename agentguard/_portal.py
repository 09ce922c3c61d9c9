"""One long-lived event loop per guard for its synchronous callers.

The guard's orchestration is written once, async. A synchronous caller (a decorated plain
function, an adapter's sync path, a framework's worker thread) used to run it with
``anyio.run``: a new event loop per call, so every store that keeps connections had to keep
them per loop, and each call paid for starting and tearing down a loop. Instead, each guard
starts one anyio blocking portal (an asyncio loop in a daemon thread) on the first synchronous
call that needs it, and every synchronous caller, from any thread, is served there. Async
callers keep running in their own loop.

Lifecycle:

- Started lazily and thread-safely; a call the policy allows statically never gets here.
- Stopped by :meth:`SyncPortal.close` (the guard's ``close``): calls still in flight are
  cancelled, and their callers get a refusal, never a hang. A later call starts a new portal.
- **Fork:** a child process inherits the portal object but not its thread. The portal remembers
  the process that started it; in a child it is forgotten (never stopped: its loop is not there
  to answer) and a new one is started on the next call.
- **Interpreter exit or a guard dropped unclosed:** a ``weakref.finalize`` stops the loop
  (cancelling what runs there), so neither exit nor garbage collection waits on a thread.

:class:`CrossLoopLock` is the lock the guard needs once its tasks may run in two loops (the
app's and the portal's): an anyio lock alone belongs to one loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.lowlevel import RunVar

from agentguard.errors import UsageError

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

__all__ = ["CrossLoopLock", "SyncPortal", "refuse_inside_loop"]

T = TypeVar("T")

_INSIDE_LOOP = (
    "a synchronous guarded call was made inside a running event loop; await the async API "
    "instead (e.g. `await guard.authorize(call)` or decorate an async function)"
)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def refuse_inside_loop() -> None:
    """Raise :class:`UsageError` when called from a thread running an asyncio event loop:
    blocking it on the guard would stall every other task of that loop (or deadlock)."""
    if _loop_running():
        raise UsageError(_INSIDE_LOOP)


def _stop(cm: AbstractContextManager[BlockingPortal], portal: BlockingPortal, pid: int,
          thread: int) -> None:
    """Stop a portal's loop, cancelling what still runs there (also the finalizer)."""
    if pid != os.getpid():
        return  # a forked child: the loop and its thread live in the parent only
    if threading.get_ident() == thread or _loop_running():
        # Dropped (garbage collected) inside its own loop, where a thread cannot join
        # itself, or inside another loop, which must not block on it: another thread stops it.
        threading.Thread(target=_stop, args=(cm, portal, pid, 0), daemon=True).start()
        return
    with suppress(RuntimeError):  # already stopped
        portal.call(portal.stop, True)
    cm.__exit__(None, None, None)


#: Portals inherited by a forked child, kept unreachable-but-alive (see ``_started``).
_INHERITED: list[Any] = []


class SyncPortal:
    """The event loop a guard's synchronous callers share (see the module docstring).

    Args:
        name: Name of the loop's thread (shown in thread dumps; default
            ``agentguard-sync-<hex id>``).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"agentguard-sync-{id(self):x}"
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._pid = 0
        self._thread = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def running(self) -> bool:
        """Whether this process has a portal loop running for this guard."""
        return self._portal is not None and self._pid == os.getpid()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs in the portal's own thread."""
        return self.running and threading.get_ident() == self._thread

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the portal's loop and return its result (thread-safe).

        Raises:
            UsageError: called from a thread that runs an event loop.
            RuntimeError: the portal was stopped while the call was being handed over.
            concurrent.futures.CancelledError: the portal was stopped while the call ran.
        """
        refuse_inside_loop()
        return self._started().call(fn, *args)

    def _started(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None and self._pid == os.getpid():
            return portal
        with self._lock:
            if self._portal is not None and self._pid == os.getpid():
                return self._portal
            if self._finalizer is not None:
                # Inherited through fork: never stop it (its loop is not in this process),
                # and never let it be collected either: closing the generator behind
                # start_blocking_portal would wait on that loop forever.
                _INHERITED.append(self._finalizer.detach())
            # Imported here: an async-only process (the proxy) never starts a portal.
            from anyio.from_thread import start_blocking_portal

            cm = start_blocking_portal("asyncio", name=self.name)
            portal = cm.__enter__()
            self._thread = portal.call(threading.get_ident)
            self._pid = os.getpid()
            self._finalizer = weakref.finalize(self, _stop, cm, portal, self._pid, self._thread)
            self._portal = portal
            return portal

    def close(self) -> None:
        """Stop the loop; calls in flight are cancelled. Idempotent; the next call starts a
        new loop. Must not be called from the portal's own thread.

        Raises:
            UsageError: called from the portal's own thread.
        """
        if self.in_loop_thread():
            raise UsageError("the guard's synchronous portal cannot be stopped from inside it")
        with self._lock:
            finalizer, self._finalizer, self._portal = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # runs _stop once (a no-op in a forked child)


class CrossLoopLock:
    """Mutual exclusion between tasks of any event loops and threads of this process.

    Within one loop, tasks queue on an anyio lock of that loop (fair, no polling); the one
    task per loop at its head then takes a thread lock, polling with a short backoff only
    while a task of *another* loop holds it.
    """

    _MIN_DELAY = 0.0005
    _MAX_DELAY = 0.02

    def __init__(self) -> None:
        self._held = threading.Lock()
        # One anyio lock per event loop: a RunVar's value lives and dies with its loop.
        self._local: RunVar[anyio.Lock] = RunVar(f"agentguard-lock-{id(self):x}")

    def _loop_lock(self) -> anyio.Lock:
        try:
            return self._local.get()
        except LookupError:
            lock = anyio.Lock()
            self._local.set(lock)
            return lock

    async def __aenter__(self) -> None:
        local = self._loop_lock()
        await local.acquire()
        try:
            delay = self._MIN_DELAY
            while not self._held.acquire(blocking=False):
                await anyio.sleep(delay)
                delay = min(self._MAX_DELAY, delay * 2)
        except BaseException:
            local.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._held.release()
        self._loop_lock().release()
