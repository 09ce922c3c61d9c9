"""The approval channel the proxy adds: MCP elicitation.

:class:`ElicitationChannel` asks the MCP client's user with a form (approve yes/no). The
client supplies the answer, so nothing vouches for who gave it: the channel is *unverified*
and the guard uses it only where a rule names ``mcp-elicitation`` and sets no approvers. On a
handshake-era client the form is pushed (``elicitation/create``); on a 2026-07-28 client it
rides an ``InputRequiredResult`` round (see :mod:`agentguard.proxy.ledger`).

The approver terminal is :class:`agentguard.channels.terminal.TerminalChannel`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, ErrorData

from agentguard.channels.base import ChannelAnswer
from agentguard.channels.render import render_request
from agentguard.proxy.askers import Asker
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest

__all__ = ["APPROVAL_SCHEMA", "ElicitationChannel"]

logger = logging.getLogger(__name__)

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approve": {"type": "boolean", "title": "Approve this call",
                    "description": "Yes runs the call exactly as shown; no refuses it."},
        "reason": {"type": "string", "title": "Reason (optional)"},
    },
    "required": ["approve"],
}


class ElicitationChannel:
    """Ask the MCP client's user through a form-mode elicitation (unverified)."""

    name = "mcp-elicitation"
    verified = False

    def __init__(self, asker: Asker) -> None:
        self._asker = asker

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Show the held call as a form; yield the user's vote."""
        # The whole call, never cut: a form has no "view all", and approving what nobody
        # could read is what this channel must not allow (the policy's max_args_bytes bounds
        # it).
        form = ElicitRequest(params=ElicitRequestFormParams(
            message=render_request(request, width=80, arg_limit=2**62),
            requested_schema=APPROVAL_SCHEMA))
        answer = await self._asker.ask(form)
        approver = f"mcp-client:{escape_text(self._asker.client_name)}"
        if isinstance(answer, ErrorData):
            yield ChannelAnswer(kind="unreachable", channel=self.name,
                                reason=f"elicitation failed: {answer.message}")
            return
        if not isinstance(answer, ElicitResult):
            yield ChannelAnswer(kind="unreachable", channel=self.name,
                                reason="the client answered with something else than a form")
            return
        content = answer.content or {}
        reason = content.get("reason")
        reason = reason if isinstance(reason, str) else ""
        if answer.action == "accept":
            approve = content.get("approve") is True
            yield ChannelAnswer(kind="vote", channel=self.name, approver=approver,
                                approve=approve,
                                reason=reason or ("" if approve else "declined in the form"))
        elif answer.action == "decline":
            yield ChannelAnswer(kind="vote", channel=self.name, approver=approver,
                                approve=False, reason=reason or "declined by the user")
        else:  # cancel: the prompt was dismissed without a choice
            yield ChannelAnswer(kind="closed", channel=self.name, reason="dismissed")

    async def settled(self, request: ApprovalRequest) -> None:
        """Nothing to clean up: the form is gone once answered."""
