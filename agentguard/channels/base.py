"""Approval channel protocol: how a held call reaches a human and the answer comes back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from agentguard.types import ApprovalRequest

__all__ = ["ApprovalChannel", "ChannelAnswer"]


@dataclass(frozen=True, slots=True)
class ChannelAnswer:
    """One human's answer, as verified by the channel.

    The channel vouches only for *who* answered (``approver`` is the verified identity: OS
    user, Slack user id, ...); the guard checks that identity against the rule's approver set
    and records the vote in the store atomically.

    Attributes:
        kind: ``vote`` (approve or deny), ``unreachable`` (the channel failed) or ``closed``
            (the channel will not produce more answers, e.g. the prompt was dismissed).
        approver: Verified identity of the human (for ``vote``).
        approve: True to approve.
        reason: Free text (deny reason, or the failure for ``unreachable``).
        grant_ttl: Seconds of "approve for N" asked for (0: this call only).
        channel: Channel name.
        edited_args: With ``approve=False``: arguments the approver proposes instead. The
            original call is refused; the edited one is a new call, decided afresh.
    """

    kind: Literal["vote", "unreachable", "closed"]
    channel: str
    approver: str = ""
    approve: bool = False
    reason: str = ""
    grant_ttl: float = 0.0
    edited_args: Mapping[str, Any] | None = None


@runtime_checkable
class ApprovalChannel(Protocol):
    """Asks humans about a held call.

    ``ask`` is an async generator: it yields answers as they arrive (several approvers may
    answer the same request; a quorum needs several votes). The guard stops iterating
    (closing the generator) once the request is settled or expired; a channel must then clean
    up (remove a prompt, update a Slack message via :meth:`settled`). A channel that cannot
    deliver the request yields ``ChannelAnswer(kind="unreachable")``.
    """

    name: str

    def ask(self, request: ApprovalRequest):  # -> AsyncIterator[ChannelAnswer]
        """Present ``request`` and yield answers."""

    async def settled(self, request: ApprovalRequest) -> None:
        """Tell the channel how the request ended (update the message, clear the prompt)."""
