"""A channel that answers from a script: automation, demos and tests of the real guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

import anyio

from agentguard.channels.base import ChannelAnswer
from agentguard.types import ApprovalRequest

__all__ = ["ScriptedChannel"]

Script = Callable[[ApprovalRequest], Iterable[ChannelAnswer]]


class ScriptedChannel:
    """Answers each request with the answers a script returns for it.

    Args:
        script: ``request -> answers``; or a fixed list of answers given to every request.
        delay: Seconds to wait before each answer (to show a held call waiting).
        name: Channel name (default ``scripted``).
    """

    verified = True

    def __init__(self, script: Script | Iterable[ChannelAnswer], *, delay: float = 0.0,
                 name: str = "scripted") -> None:
        if callable(script):
            self._script: Script = script
        else:
            fixed = list(script)
            self._script = lambda request: fixed
        self.delay = delay
        self.name = name
        self.settled_requests: list[ApprovalRequest] = []

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Yield the scripted answers for ``request``."""
        for answer in self._script(request):
            if self.delay:
                await anyio.sleep(self.delay)
            yield answer

    async def settled(self, request: ApprovalRequest) -> None:
        """Remember how requests ended (demos print it; tests inspect it)."""
        self.settled_requests.append(request)

    @staticmethod
    def vote(approver: str, approve: bool = True, *, reason: str = "",
             grant_ttl: float = 0.0) -> ChannelAnswer:
        """Build a vote answer."""
        return ChannelAnswer(kind="vote", channel="scripted", approver=approver,
                             approve=approve, reason=reason, grant_ttl=grant_ttl)
