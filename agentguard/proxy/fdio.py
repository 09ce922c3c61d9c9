"""Pipes read and written straight from the event loop, with no thread per message.

:class:`FdReader` polls a descriptor for readability; :class:`FdWriter` writes whole lines,
synchronously when the pipe has room (the common case, so an answer can be relayed without a
task switch) and otherwise from a flush task, in order. Descriptors the event loop cannot poll
(a regular file) fall back to blocking calls (reads on a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

__all__ = ["FdReader", "FdWriter"]

logger = logging.getLogger(__name__)

CHUNK = 65536
_HIGH_WATER = 1 << 20


class _Batch(threading.local):
    """Writers written to from the running readiness callback (one loop per thread)."""

    active = False

    def __init__(self) -> None:
        self.writers: list[FdWriter] = []


_BATCH = _Batch()


def _end_batch(batch: _Batch) -> None:
    """Write what the callback queued: one ``write`` per writer, in the order first used."""
    writers = batch.writers
    batch.writers = []
    batch.active = False
    for writer in writers:
        writer._batched = False
    _push(writers, 0)


def _push(writers: list[FdWriter], start: int) -> None:
    """Push each writer's queue; one that raises (a failing ``on_close``, a closed task group)
    does not keep the others' from the pipe."""
    index = start
    try:
        while index < len(writers):
            index += 1
            writers[index - 1]._push()
    finally:
        if index < len(writers):
            _push(writers, index)


def _nonblocking(fd: int) -> bool:
    with contextlib.suppress(OSError):
        os.set_blocking(fd, False)
        return True
    return False


class FdReader:
    """Reads chunks from a descriptor without blocking the event loop.

    On asyncio the descriptor stays registered with the loop while the reader is in use, and
    the loop's readiness callback reads the chunk itself and hands it to the waiting reader:
    one ``read`` per chunk and one loop wake-up, with no failed read before each wait and no
    second wake-up from the level-triggered selector reporting the same, still unread, data.
    Elsewhere anyio's ``wait_readable`` is used. Call :meth:`close` before closing the
    descriptor.

    ``intercept``, when set, sees each chunk the callback reads for a waiting reader first,
    and may consume a head of it there, returning the rest (``b""``: all of it, the reader
    is not woken; else the reader gets the rest), so common messages are served without a
    task switch. It is only called while the reader waits, that is while its consumer has
    dealt with everything before; an exception it raises is the reader's. What it writes
    with :class:`FdWriter` is written when it returns (one write per writer).
    """

    intercept: Callable[[bytes], bytes] | None = None

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.polled = _nonblocking(fd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._registered = False
        self._held: bytes | None = None  # read for a waiter that was cancelled meanwhile

    async def read(self) -> bytes:
        """The next chunk, ``b""`` at end of file."""
        if not self.polled:
            return await anyio.to_thread.run_sync(os.read, self.fd, CHUNK, abandon_on_cancel=True)
        held = self._held
        if held is not None:
            self._held = None
            return held
        if not self._registered:
            # Not watched yet (or no longer): the data may already be there.
            try:
                return os.read(self.fd, CHUNK)
            except BlockingIOError:
                pass
        try:
            return await self._next()
        except _NotPollable:  # a regular file
            self.polled = False
            os.set_blocking(self.fd, True)
            return await self.read()

    async def _next(self) -> bytes:
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # another anyio backend (trio)
                return await self._wait_then_read()
        if not self._registered:
            try:
                loop.add_reader(self.fd, self._wake)
            except OSError:
                raise _NotPollable from None
            self._registered = True
        self._waiter = waiter = loop.create_future()
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._held = waiter.result()  # read, but the reader was cancelled: keep it
            raise
        finally:
            self._waiter = None

    async def _wait_then_read(self) -> bytes:
        while True:
            try:
                await anyio.wait_readable(self.fd)
            except OSError:
                raise _NotPollable from None
            try:
                return os.read(self.fd, CHUNK)
            except BlockingIOError:
                continue

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Readable while nobody waits (the consumer is busy): stop watching, or the
            # level-triggered selector would call us on every loop iteration.
            self.close()
            return
        try:
            chunk = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            waiter.set_exception(exc)
            return
        if chunk and self.intercept is not None:
            batch = _BATCH
            batch.active = True
            try:
                try:
                    chunk = self.intercept(chunk)
                finally:
                    _end_batch(batch)
            except Exception as exc:
                waiter.set_exception(exc)
                return
            if not chunk:
                return
        waiter.set_result(chunk)

    def close(self) -> None:
        """Stop watching the descriptor (it may be closed afterwards)."""
        if self._registered and self._loop is not None:
            self._registered = False
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)


class _NotPollable(Exception):
    """The descriptor cannot be polled (a regular file): read it with blocking calls."""


class FdWriter:
    """Writes whole messages to a descriptor, in order, synchronously when it can.

    Args:
        fd: The descriptor (made non-blocking when possible).
        spawn: Starts a task (used to flush what the pipe could not take at once).
        on_close: Called once when a write fails (the descriptor is unusable).
    """

    def __init__(self, fd: int, spawn: Callable[..., Any],
                 on_close: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.polled = _nonblocking(fd)
        self._spawn = spawn
        self._on_close = on_close
        self._buffer = bytearray()
        self._flushing = False
        self._batched = False
        self._drained = anyio.Event()
        self._drained.set()
        self.closed = False

    def write_nowait(self, data: bytes) -> None:
        """Queue ``data`` after anything still pending; write at once if nothing is (at the
        end of the running readiness callback, if one runs)."""
        if self.closed:
            return
        batch = _BATCH
        if batch.active:
            self._buffer += data
            if not self._batched:
                self._batched = True
                batch.writers.append(self)
            return
        if not self._buffer and not self._flushing:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._close(exc)
                return
            if written == len(data):
                return
            data = data[written:]
        self._buffer += data
        if not self._flushing:
            self._flushing = True
            self._drained = anyio.Event()
            self._spawn(self._flush)

    def _push(self) -> None:
        """Write what a batch queued (the flush task's, if it runs)."""
        if self.closed or self._flushing or not self._buffer:
            return
        try:
            written = os.write(self.fd, self._buffer)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._close(exc)
            return
        del self._buffer[:written]
        if self._buffer:
            self._flushing = True
            self._drained = anyio.Event()
            self._spawn(self._flush)

    async def write(self, data: bytes) -> None:
        """Queue ``data``; wait while a backlog over 1 MiB drains (backpressure)."""
        self.write_nowait(data)
        if len(self._buffer) > _HIGH_WATER:
            await self._drained.wait()

    async def drain(self) -> None:
        """Wait until everything queued has been written (or the descriptor failed)."""
        await self._drained.wait()

    async def _flush(self) -> None:
        try:
            while self._buffer and not self.closed:
                try:
                    written = os.write(self.fd, self._buffer)
                except BlockingIOError:
                    if self.polled:
                        await anyio.wait_writable(self.fd)
                    else:
                        await anyio.sleep(0.001)
                    continue
                except OSError as exc:
                    self._close(exc)
                    return
                del self._buffer[:written]
        finally:
            self._flushing = False
            self._drained.set()

    def _close(self, exc: OSError) -> None:
        logger.info("write to fd %d failed: %s", self.fd, exc)
        self.closed = True
        self._buffer.clear()
        self._drained.set()
        if self._on_close is not None:
            self._on_close()
