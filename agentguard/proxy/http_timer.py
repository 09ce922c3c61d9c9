"""A deadline that is moved often and rarely reached, on one event-loop timer.

The listener moves a connection's deadline with every request (the keep-alive wait after an
answer, the read allowance of the next request) and a relayed call's ping window with every
call; almost none of them is ever reached. :class:`LazyTimer` stores the new deadline instead
of cancelling one timer handle and scheduling another: the handle it keeps re-schedules itself
for the deadline when it fires early, and calls back only once the deadline has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LazyTimer"]

_EARLY = 0.001
"""Seconds a timer may fire before its time and still count as on time (the loop's clock
resolution: libuv schedules in milliseconds)."""


class LazyTimer:
    """Calls ``callback`` once a deadline set by :meth:`arm` has passed (unless disarmed).

    Args:
        loop: The event loop to schedule on.
        callback: Called with no argument when the deadline is reached.
    """

    __slots__ = ("_callback", "_deadline", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        """A deadline is set."""
        return self._deadline is not None

    def arm(self, seconds: float) -> None:
        """Set the deadline ``seconds`` from now (replacing any earlier one)."""
        deadline = self._loop.time() + seconds
        self._deadline = deadline
        handle = self._handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        """Clear the deadline (the timer handle, if any, is left to fire and do nothing)."""
        self._deadline = None

    def close(self) -> None:
        """Clear the deadline and cancel the timer handle (nothing is kept alive by it)."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline - self._loop.time() > _EARLY:  # moved on since it was scheduled
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._callback()
