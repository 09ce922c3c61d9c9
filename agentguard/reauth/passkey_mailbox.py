"""Passkey step-up through the store: the guard asks, the web page answers, the guard checks.

The guard (in the agent's process) and ``agentguard serve --web`` (another OS user) share only
the store, which the agent can write: so the store carries the proof, never the verdict.
:class:`MailboxStepUp` is an :data:`~agentguard.reauth.passkey.AskAssertion` hook for
:class:`~agentguard.reauth.passkey.PasskeyReauthenticator`:

1. it makes sure the held request (the whole call, as every channel shows it) is in the store,
   and announces the page's link, ``<page>/stepup/<request id>``;
2. the human opens it, signs in, reads the call, and confirms with a passkey; the page makes
   the :class:`~agentguard.reauth.passkey.ReauthStatement` (this request, its call hash, the
   signed-in person, now), checks the assertion, and puts the
   :class:`~agentguard.reauth.passkey.StepUpProof` under :func:`proof_slot` in the store;
3. the hook hands the proof to the reauthenticator, which checks it again against the trust
   file and the call hash it holds in memory. A row the agent writes there proves nothing.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import anyio

from agentguard.identity import canonical_identity
from agentguard.reauth.passkey import CLOCK_SKEW, ReauthStatement, StepUpProof
from agentguard.store.base import Store
from agentguard.trust.anchors import PasskeyAnchor
from agentguard.types import ApprovalRequest

__all__ = ["MailboxStepUp", "proof_slot", "stepup_link"]

_NOT_A_PROOF: dict[str, Any] = {}  # fails verification: a malformed row counts as a failure


def proof_slot(request_id: str, subject: str) -> str:
    """The store slot (``set_secret`` name) where the page leaves a step-up proof."""
    return f"stepup:{request_id}:{canonical_identity(subject)}"


def stepup_link(page: str, request_id: str) -> str:
    """The page a human opens to step up for ``request_id``."""
    return f"{page.rstrip('/')}/stepup/{request_id}"


class MailboxStepUp:
    """Ask for a passkey step-up through the web page and the store (see the module docstring).

    Args:
        store: The store the page writes to.
        page: The web page's origin (``agentguard serve --web --origin``).
        announce: Called (or awaited) with ``(subject, link, request)`` so a channel can send
            the link (the proxy's URL-mode elicitation, a chat message, the terminal); a
            ``False`` answer means the human declined, and nobody is waited for.
        poll: Seconds between looks at the store.
        clock: Unix time.
    """

    def __init__(self, store: Store, page: str, *,
                 announce: Callable[[str, str, ApprovalRequest], Any] | None = None,
                 poll: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        self.store, self.page, self.announce = store, page, announce
        self.poll, self.clock = poll, clock

    async def __call__(self, subject: str, request: ApprovalRequest,
                       statement: ReauthStatement, passkeys: tuple[PasskeyAnchor, ...],
                       ) -> StepUpProof | dict[str, Any] | None:
        if await self.store.get_request(request.id) is None:
            await self.store.create_request(request)  # what the page shows: the whole call
        link = stepup_link(self.page, request.id)
        if self.announce is not None:
            said = self.announce(subject, link, request)
            if inspect.isawaitable(said):
                said = await said
            if said is False:
                return None
        slot = proof_slot(request.id, subject)
        while self.clock() < request.expires_at:
            raw = await self.store.get_secret(slot)
            if raw:
                try:
                    proof = StepUpProof.from_dict(json.loads(raw))
                except (ValueError, TypeError):
                    return _NOT_A_PROOF
                if proof.statement.at >= statement.at - CLOCK_SKEW:  # older: keep waiting
                    return proof
            await anyio.sleep(self.poll)
        return None
