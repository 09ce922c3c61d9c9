"""``Fallback(primary, secondary)``: ask the secondary channel only if the primary fails.

``Fallback(SlackChannel(...), ConsoleChannel())`` posts to Slack and, if Slack cannot be
reached, asks at the terminal instead of refusing the call as ``unreachable``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from agentguard.channels.base import ApprovalChannel, ChannelAnswer
from agentguard.types import ApprovalRequest

__all__ = ["Fallback"]

log = logging.getLogger("agentguard.channels")


class Fallback:
    """An approval channel that uses ``secondary`` only when ``primary`` is unreachable.

    The primary's answers pass through unchanged. If it yields ``unreachable`` (or raises),
    the secondary is asked; if that is unreachable too, the answer names both failures.

    Args:
        primary: The channel to try first.
        secondary: The channel used when the primary fails.
        name: Channel name (default: the primary's, so rules naming it still match).
    """

    def __init__(
        self, primary: ApprovalChannel, secondary: ApprovalChannel, *, name: str | None = None
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.name = name or primary.name
        # Only as strong as the weaker of the two: either may end up answering.
        self.verified = (getattr(primary, "verified", False) is True
                         and getattr(secondary, "verified", False) is True)
        self._fell_back: set[str] = set()

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Yield the primary's answers, or the secondary's once the primary failed."""
        failure = None
        async with aclosing(self.primary.ask(request)) as answers:
            while True:
                try:
                    answer = await answers.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # a broken primary is an unreachable one
                    failure = f"{type(exc).__name__}: {exc}"
                    break
                if answer.kind == "unreachable":
                    failure = answer.reason
                    break
                yield answer
        if failure is None:
            return
        log.warning("channel %s unreachable (%s); asking %s instead", self.primary.name,
                    failure, self.secondary.name)
        self._fell_back.add(request.id)
        async with aclosing(self.secondary.ask(request)) as answers:
            async for answer in answers:
                if answer.kind == "unreachable":
                    # The guard names the channel that failed (this one) before the reason;
                    # the primary's name is added only where it differs from ours.
                    first = (failure if self.name == self.primary.name
                             else f"{self.primary.name}: {failure}")
                    yield ChannelAnswer(
                        kind="unreachable", channel=self.name,
                        reason=f"{first}; {self.secondary.name}: {answer.reason}")
                    return
                yield answer

    async def settled(self, request: ApprovalRequest) -> None:
        """Tell the primary, and the secondary if it was asked, how the request ended."""
        channels = [self.primary]
        if request.id in self._fell_back:
            self._fell_back.discard(request.id)
            channels.append(self.secondary)
        for channel in channels:
            try:
                await channel.settled(request)
            except Exception as exc:
                log.warning("channel %s failed to record the outcome of %s: %s",
                            channel.name, request.id, exc)
