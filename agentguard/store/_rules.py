"""Store semantics shared by every backend: vote counting, grant matching, waiting.

Backends own atomicity (a lock, a transaction); the rules of *what* a transition does live here
once, so that the memory, SQLite and future backends cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase

import anyio

from agentguard.errors import ConflictError
from agentguard.identity import canonical_identity
from agentguard.types import ApprovalRequest, ApprovalVote, Grant, GrantQuery

__all__ = [
    "Waiters",
    "apply_vote",
    "grant_covers",
    "grant_preference",
    "present",
    "wait_until_settled",
]


def present(request: ApprovalRequest, now: float) -> ApprovalRequest:
    """Show a pending request whose deadline passed as ``expired``."""
    if request.status == "pending" and request.is_expired(now):
        return dataclasses.replace(request, status="expired")
    return request


def apply_vote(
    request: ApprovalRequest, vote: ApprovalVote, now: float
) -> tuple[ApprovalRequest, bool]:
    """Return the request after ``vote`` and whether the vote counted.

    A deny always counts and settles the request, even from someone who approved earlier:
    changing one's mind towards "no" must never be ignored. A repeated approve from the same
    approver is ignored, so a quorum needs distinct people: approvers are compared by
    :func:`~agentguard.identity.canonical_identity` (``carol`` and ``user:carol`` are one).

    Raises:
        ConflictError: the request is not pending or its deadline passed.
    """
    current = present(request, now)
    if current.status != "pending":
        raise ConflictError(f"approval request is no longer pending (status: {current.status})")
    if not vote.approve:
        return dataclasses.replace(
            request, status="denied", votes=(*request.votes, vote),
            decided_by=(vote.approver,), decided_at=now,
        ), True
    approvers = [v.approver for v in request.votes if v.approve]
    voter = canonical_identity(vote.approver)
    if voter in {canonical_identity(a) for a in approvers}:
        return request, False
    approvers.append(vote.approver)
    votes = (*request.votes, vote)
    if len(approvers) >= max(1, request.approval.quorum):
        return dataclasses.replace(
            request, status="approved", votes=votes, decided_by=tuple(approvers),
            decided_at=now,
        ), True
    return dataclasses.replace(request, votes=votes), True


def grant_covers(grant: Grant, query: GrantQuery, now: float) -> bool:
    """True when ``grant`` may be used for the call ``query`` describes at ``now``.

    Everything the approvers decided binds: the rule and its approval settings (a stricter
    rule of the same class, or the same rule after a policy edit, is not covered), the
    principal and the human it acts for, server and tool, and never a higher class.
    """
    if grant.kind != query.kind or grant.principal != query.principal:
        return False
    if grant.acting_for != query.acting_for:
        return False
    if grant.rule_id != query.rule_id or grant.settings_hash != query.settings_hash:
        return False
    if now >= grant.expires_at or query.rank > grant.max_rank:
        return False
    if not (fnmatchcase(query.server, grant.server) and fnmatchcase(query.tool, grant.tool)):
        return False
    if grant.call_hash is not None and grant.call_hash != query.call_hash:
        return False
    if grant.scope == "session":
        return grant.session_id is not None and grant.session_id == query.session_id
    return grant.scope in ("once", "ttl")


def grant_preference(grant: Grant) -> tuple[bool, float, str]:
    """Sort key: grants bound to the exact call first, then the ones expiring soonest."""
    return (grant.call_hash is None, grant.expires_at, grant.id)


class Waiters:
    """In-process wake-ups for :meth:`Store.wait_for_change`.

    Events are only set from the thread that created them: an anyio event belongs to one event
    loop. Waiters in other threads or processes are covered by polling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, set[tuple[anyio.Event, int]]] = {}

    @contextmanager
    def register(self, request_id: str) -> Iterator[anyio.Event]:
        """Register an event set by :meth:`notify` for ``request_id``."""
        entry = (anyio.Event(), threading.get_ident())
        with self._lock:
            self._events.setdefault(request_id, set()).add(entry)
        try:
            yield entry[0]
        finally:
            with self._lock:
                entries = self._events.get(request_id)
                if entries is not None:
                    entries.discard(entry)
                    if not entries:
                        del self._events[request_id]

    def notify(self, request_id: str) -> None:
        """Wake waiters of ``request_id`` that live in the calling thread."""
        me = threading.get_ident()
        with self._lock:
            entries = list(self._events.get(request_id, ()))
        for event, owner in entries:
            if owner == me:
                event.set()


async def wait_until_settled(
    fetch: Callable[[str], Awaitable[ApprovalRequest | None]],
    waiters: Waiters,
    request_id: str,
    timeout: float,
    *,
    first_poll: float,
    max_poll: float,
) -> ApprovalRequest | None:
    """Wait until ``fetch`` shows the request out of ``pending``, or ``timeout`` seconds pass.

    Wakes at once on an in-process :meth:`Waiters.notify`, otherwise polls with a backoff from
    ``first_poll`` to ``max_poll`` seconds (decisions made by other processes).
    """
    deadline = anyio.current_time() + max(0.0, timeout)
    delay = first_poll
    while True:
        # Register before reading so that a decision between the read and the wait is not lost.
        with waiters.register(request_id) as event:
            request = await fetch(request_id)
            if request is None or request.status != "pending":
                return request
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return request
            with anyio.move_on_after(min(delay, remaining)):
                await event.wait()
        delay = min(max_poll, delay * 2)
