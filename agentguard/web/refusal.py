"""The web page's refusal: an error the page shows with its HTTP status."""

from __future__ import annotations

from agentguard.errors import AgentGuardError

__all__ = ["Refused"]


class Refused(AgentGuardError):
    """A request the page refuses, with the message it shows and the HTTP status.

    Attributes:
        message: What the approver reads.
        status: The HTTP status of the answer.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status
