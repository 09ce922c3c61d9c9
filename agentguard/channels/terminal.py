"""The approver terminal as a channel: humans answer from another process.

A human runs ``agentguard approvals approve ID`` (or ``approvals watch``) elsewhere; that votes
straight into the shared store. The channel itself only says where to look; the guard watches
the store and settles the call. Use it for headless agents and the stdio MCP proxy, which
cannot prompt on their own terminal.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import anyio

from agentguard.channels.base import ChannelAnswer
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest

__all__ = ["TerminalChannel", "without_password"]

logger = logging.getLogger("agentguard.channels.terminal")


class TerminalChannel:
    """The approver terminal: votes arrive through the shared store from another process."""

    name = "terminal"
    verified = True

    def __init__(self, store_hint: str | None = None, *, audit_hint: str | None = None) -> None:
        self._options: list[str] = []
        self._withheld = False
        for flag, hint in (("--store", store_hint), ("--audit", audit_hint)):
            if hint:
                shown, withheld = without_password(hint)
                self._withheld |= withheld
                self._options += [flag, shown]

    def decide_command(self, request: ApprovalRequest, verb: str = "approve") -> str:
        """The command an approver pastes to decide ``request`` (shell-quoted, escaped)."""
        return escape_text(shlex.join(["agentguard", "approvals", verb, request.id,
                                       *self._options]))

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Say where to approve, then wait; the guard settles the call from the store."""
        approvers = request.approval.approvers
        who = (f" (approvers: {escape_text(', '.join(approvers))}; add --as NAME when your "
               "OS user is not the one they name)") if approvers else ""
        secret = (" (the database password is left out of it: give it as PGPASSWORD or in "
                  "~/.pgpass)") if self._withheld else ""
        logger.warning("call held: %s on %s (request %s); decide with `%s`%s (or `deny` in its "
                       "place, with --reason WHY)%s",
                       escape_text(str(request.call.get("tool"))),
                       escape_text(str(request.call.get("server"))), request.id,
                       self.decide_command(request), secret, who)
        await anyio.sleep_forever()
        yield ChannelAnswer(kind="closed", channel=self.name)  # pragma: no cover

    async def settled(self, request: ApprovalRequest) -> None:
        """Log how the request ended."""
        logger.info("request %s %s", request.id, request.status)


def without_password(url: str) -> tuple[str, bool]:
    """``url`` without the password of its user part, and whether one was removed.

    A held call's hint goes to a log that people paste from and share; a database password
    does not belong there. PostgreSQL clients (libpq) take it from ``PGPASSWORD`` or
    ``~/.pgpass`` instead, so the command still works when pasted.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, False
    if not password:
        return url, False
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host)), True

