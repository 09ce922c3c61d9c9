"""The store: shared state of held calls, grants, re-authentication and risk signals.

The contract is five narrow protocols a backend can implement, and be tested against, one at a
time — :class:`RequestStore` (held calls and votes), :class:`GrantStore`,
:class:`CredentialStore` (re-authentication freshness, enrolment secrets, used TOTP steps,
lockouts), :class:`CounterStore` (rate events, first use, cooldowns) and :class:`PinStore`
(MCP tool pins and definitions) — each with its conformance suite in
:mod:`agentguard.testing.store_conformance`. :class:`Store` is all five: what the guard needs.

Every method is async. Every state transition that matters for security is atomic in the
backend (a conditional UPDATE, a lock), never read-then-write in Python: two processes or
replicas racing on the same request must see exactly one winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentguard.types import ApprovalRequest, ApprovalVote, Grant, GrantQuery, RequestStatus

__all__ = [
    "CounterStore",
    "CredentialStore",
    "GrantStore",
    "Lifecycle",
    "PinStore",
    "RequestStore",
    "Store",
    "VoteResult",
]


class VoteResult:
    """What :meth:`Store.record_vote` did.

    Attributes:
        request: The request after the vote.
        counted: False when the vote was ignored (a second vote by the same approver).
    """

    __slots__ = ("counted", "request")

    def __init__(self, request: ApprovalRequest, counted: bool) -> None:
        self.request = request
        self.counted = counted


@runtime_checkable
class Lifecycle(Protocol):
    """Opening and closing a backend (every narrow protocol has it)."""

    async def open(self) -> None:
        """Create tables / connect. Idempotent."""

    async def close(self) -> None:
        """Release resources. Idempotent."""


@runtime_checkable
class RequestStore(Lifecycle, Protocol):
    """Approval requests and their votes."""

    async def create_request(self, request: ApprovalRequest) -> None:
        """Persist a new pending request. Raises ``StoreError`` if the id exists."""

    async def get_request(self, request_id: str) -> ApprovalRequest | None:
        """Return a request (expired pending requests are returned as ``expired``)."""

    async def list_requests(
        self, status: RequestStatus | None = None, limit: int = 100, *,
        call_hash: str | None = None,
    ) -> Sequence[ApprovalRequest]:
        """Requests, newest first, optionally filtered by status and by the call hash (a
        retried call finds the request raised for it)."""

    async def count_pending(self, principal: str, privilege: str) -> int:
        """Pending, unexpired requests raised for ``principal`` at ``privilege`` (flood
        control: a query in the backend, never a list loaded into Python)."""

    async def record_vote(self, request_id: str, vote: ApprovalVote) -> VoteResult:
        """Atomically add a vote to a pending, unexpired request.

        A deny vote settles the request as ``denied`` (even from someone who approved
        earlier). Approve votes from distinct approvers are counted; reaching
        ``approval.quorum`` settles it as ``approved``. A second approve from the same
        approver is not counted. Authorisation of the approver is the caller's job (the guard
        checks it before voting).

        Raises:
            ConflictError: the request is not pending (decided, consumed, expired) or unknown.
        """

    async def wait_for_change(self, request_id: str, timeout: float) -> ApprovalRequest | None:
        """Return the request once its status is no longer ``pending`` or the timeout passes
        (then return it as it is). Wakes promptly when another process decides."""

    async def consume(self, request_id: str, call_hash: str) -> bool:
        """Atomically move an ``approved`` request whose hash matches to ``consumed``.

        Returns True exactly once per approved request; False if it is not approved, was
        already consumed, or the hash differs.
        """

    async def expire(self, request_id: str) -> bool:
        """Atomically move a ``pending`` request to ``expired``; True if this call did it."""

    async def cancel(self, request_id: str) -> bool:
        """Atomically move a ``pending`` request to ``cancelled``; True if this call did it."""


@runtime_checkable
class GrantStore(Lifecycle, Protocol):
    """Grants: approvals that cover later calls (``once``, ``session``, ``ttl``)."""

    async def add_grant(self, grant: Grant) -> None:
        """Persist a grant."""

    async def use_grant(self, query: GrantQuery, *, now: float) -> Grant | None:
        """Find an unexpired grant covering ``query`` and use it atomically.

        Coverage is :func:`agentguard.store._rules.grant_covers` (the same rule for every
        backend): same kind, principal, human acted for, rule and approval settings; server
        and tool matching the grant's globs; a rank no higher than ``grant.max_rank``. A
        ``once`` grant is deleted when used (a second use finds nothing); ``session`` grants
        need the same session id; ``ttl`` grants cover until expiry.
        """

    async def list_grants(self, now: float | None = None) -> Sequence[Grant]:
        """Unexpired grants."""

    async def revoke_grant(self, grant_id: str) -> bool:
        """Delete a grant; True if it existed."""


@runtime_checkable
class CredentialStore(Lifecycle, Protocol):
    """Re-authentication state: freshness, enrolment secrets, used TOTP steps, lockouts."""

    async def record_reauth(self, subject: str, method: str, at: float) -> None:
        """Remember a successful re-authentication (step-up freshness)."""

    async def last_reauth(self, subject: str, method: str) -> float | None:
        """Unix time of the latest successful re-authentication, if any."""

    async def set_secret(self, name: str, value: str) -> None:
        """Store an enrolment secret (TOTP seed) under ``name``; replaces any previous."""

    async def get_secret(self, name: str) -> str | None:
        """Return an enrolment secret."""

    async def use_otp(self, subject: str, timecode: int) -> bool:
        """Atomically mark a TOTP time step as used; False if it was already used."""

    async def record_failure(self, subject: str, at: float, window: float) -> int:
        """Record a failed verification; return failures within the last ``window`` s."""

    async def clear_failures(self, subject: str) -> None:
        """Forget failures after a success."""

    async def set_lockout(self, subject: str, until: float) -> None:
        """Lock ``subject`` out until the given time."""

    async def lockout_until(self, subject: str) -> float | None:
        """Time the lockout of ``subject`` ends, if any (past values may be returned)."""


@runtime_checkable
class CounterStore(Lifecycle, Protocol):
    """Risk-signal state: rate events, first use of a tool, cooldowns of denied calls."""

    async def record_event(self, key: str, at: float) -> None:
        """Count one event (rate signals: key is e.g. ``principal|label``)."""

    async def count_events(self, key: str, since: float) -> int:
        """Events recorded for ``key`` at or after ``since``."""

    async def first_use(self, principal: str, server: str, tool: str) -> bool:
        """Atomically record that ``principal`` used ``server/tool``; True the first time."""

    async def set_cooldown(self, key: str, until: float, reason: str) -> None:
        """Refuse calls with this key (a denied call hash) until ``until``."""

    async def get_cooldown(self, key: str, now: float) -> str | None:
        """The reason of an active cooldown for ``key``, if any."""


@runtime_checkable
class PinStore(Lifecycle, Protocol):
    """MCP tool pins and the definitions they name."""

    async def get_pin(self, server: str, tool: str) -> str | None:
        """Pinned definition hash of a tool."""

    async def set_pin(self, server: str, tool: str, definition_hash: str) -> None:
        """Pin (or re-pin) a tool definition hash."""

    async def list_pins(self) -> Sequence[tuple[str, str, str]]:
        """All pins as (server, tool, hash)."""

    async def put_definition(self, definition_hash: str, definition: str) -> None:
        """Keep a tool definition (canonical JSON text) under its hash; the first write wins.

        Readers must check that the text hashes to the key: the store is not trusted."""

    async def get_definition(self, definition_hash: str) -> str | None:
        """The definition kept under ``definition_hash``, if any."""


@runtime_checkable
class Store(RequestStore, GrantStore, CredentialStore, CounterStore, PinStore, Protocol):
    """Every narrow protocol: what the guard needs. See
    ``agentguard.testing.store_conformance`` for the contract."""
