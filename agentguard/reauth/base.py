"""Re-authentication protocol: someone re-proves who they are, outside the model's reach."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from agentguard.types import ApprovalRequest

__all__ = ["ReauthResult", "Reauthenticator"]


@dataclass(frozen=True, slots=True)
class ReauthResult:
    """Outcome of a re-authentication attempt.

    Attributes:
        kind: ``verified``, ``failed``, ``locked`` (too many failures) or ``unreachable``
            (no way to ask the human).
        subject: Whose identity was checked.
        method: ``totp``, ``oauth``...
        reason: Human-readable detail (never the code itself).
    """

    kind: Literal["verified", "failed", "locked", "unreachable"]
    subject: str
    method: str
    reason: str = ""


@runtime_checkable
class Reauthenticator(Protocol):
    """Verifies a subject's identity afresh.

    The proof (a TOTP code, an OAuth token) comes from the human over a channel the model
    cannot write to, never from tool arguments.
    """

    method: str

    async def reauthenticate(self, subject: str, request: ApprovalRequest) -> ReauthResult:
        """Ask ``subject`` to re-prove identity for ``request`` and verify the proof."""
