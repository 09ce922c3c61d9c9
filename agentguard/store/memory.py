"""In-process store for tests, the demo and single-process use.

State lives in dicts guarded by one ``threading.Lock`` that is never held across an ``await``,
so every transition is atomic for tasks of one event loop and for threads alike. Records are
round-tripped through the JSON codec so this backend behaves exactly like the persistent ones
(and a value that could not be persisted fails here too).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence

from agentguard.errors import ConflictError, StoreError
from agentguard.store._codec import (
    grant_from_dict,
    grant_to_dict,
    request_from_dict,
    request_to_dict,
)
from agentguard.store._rules import (
    Waiters,
    apply_vote,
    grant_covers,
    grant_preference,
    present,
    wait_until_settled,
)
from agentguard.store.base import VoteResult
from agentguard.types import ApprovalRequest, ApprovalVote, Grant, GrantQuery, RequestStatus

__all__ = ["MemoryStore"]

# Same-loop votes wake waiters through events; this bounds the delay for votes cast from
# another thread or event loop, which cannot set a foreign loop's event.
_POLL = 0.25


def _copy_request(request: ApprovalRequest) -> ApprovalRequest:
    return request_from_dict(json.loads(json.dumps(request_to_dict(request), allow_nan=False)))


class MemoryStore:
    """A :class:`~agentguard.store.Store` kept in memory; nothing survives the process.

    Args:
        clock: Source of the current Unix time (inject a manual clock in tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiters = Waiters()
        self._requests: dict[str, ApprovalRequest] = {}
        self._grants: dict[str, Grant] = {}
        self._reauth: dict[tuple[str, str], float] = {}
        self._secrets: dict[str, str] = {}
        self._otp: set[tuple[str, int]] = set()
        self._failures: dict[str, list[float]] = {}
        self._lockouts: dict[str, float] = {}
        self._events: dict[str, list[float]] = {}
        self._first_use: set[tuple[str, str, str]] = set()
        self._cooldowns: dict[str, tuple[float, str]] = {}
        self._pins: dict[tuple[str, str], str] = {}
        self._definitions: dict[str, str] = {}

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Nothing to do; present for the protocol."""

    async def close(self) -> None:
        """Nothing to release; the state stays readable."""

    # -- approval requests -------------------------------------------------------------
    async def create_request(self, request: ApprovalRequest) -> None:
        stored = _copy_request(request)
        with self._lock:
            if request.id in self._requests:
                raise StoreError("an approval request with this id already exists")
            self._requests[request.id] = stored

    async def get_request(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            request = self._requests.get(request_id)
        return None if request is None else present(request, self._clock())

    async def list_requests(
        self, status: RequestStatus | None = None, limit: int = 100, *,
        call_hash: str | None = None,
    ) -> Sequence[ApprovalRequest]:
        now = self._clock()
        with self._lock:
            ordered = list(self._requests.values())
        # dicts keep insertion order; reversing first makes ties come out newest first
        ordered.reverse()
        ordered.sort(key=lambda r: r.created_at, reverse=True)
        shown = [present(r, now) for r in ordered]
        return [r for r in shown if (status is None or r.status == status)
                and (call_hash is None or r.call_hash == call_hash)][: max(0, limit)]

    async def count_pending(self, principal: str, privilege: str) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for r in self._requests.values()
                       if r.status == "pending" and r.expires_at > now
                       and r.call.get("principal") == principal and r.privilege == privilege)

    async def record_vote(self, request_id: str, vote: ApprovalVote) -> VoteResult:
        with self._lock:
            request = self._requests.get(request_id)
            if request is None:
                raise ConflictError("no approval request with this id")
            updated, counted = apply_vote(request, vote, self._clock())
            self._requests[request_id] = updated
        if updated.status != "pending":
            self._waiters.notify(request_id)
        return VoteResult(updated, counted)

    async def wait_for_change(self, request_id: str, timeout: float) -> ApprovalRequest | None:
        return await wait_until_settled(
            self.get_request, self._waiters, request_id, timeout, first_poll=_POLL,
            max_poll=_POLL,
        )

    def _transition(self, request_id: str, allowed: RequestStatus, to: RequestStatus,
                    call_hash: str | None = None) -> bool:
        with self._lock:
            request = self._requests.get(request_id)
            if request is None or request.status != allowed:
                return False
            if call_hash is not None and request.call_hash != call_hash:
                return False
            decided_at = self._clock() if allowed == "pending" else request.decided_at
            self._requests[request_id] = dataclasses.replace(
                request, status=to, decided_at=decided_at
            )
        self._waiters.notify(request_id)
        return True

    async def consume(self, request_id: str, call_hash: str) -> bool:
        return self._transition(request_id, "approved", "consumed", call_hash)

    async def expire(self, request_id: str) -> bool:
        return self._transition(request_id, "pending", "expired")

    async def cancel(self, request_id: str) -> bool:
        return self._transition(request_id, "pending", "cancelled")

    # -- grants ------------------------------------------------------------------------
    async def add_grant(self, grant: Grant) -> None:
        stored = grant_from_dict(json.loads(json.dumps(grant_to_dict(grant))))
        with self._lock:
            if grant.id in self._grants:
                raise StoreError("a grant with this id already exists")
            self._grants[grant.id] = stored

    async def use_grant(self, query: GrantQuery, *, now: float) -> Grant | None:
        with self._lock:
            candidates = [
                g for g in self._grants.values()
                if grant_covers(g, query, now)
            ]
            if not candidates:
                return None
            grant = min(candidates, key=grant_preference)
            used = dataclasses.replace(grant, uses=grant.uses + 1)
            if grant.scope == "once":
                del self._grants[grant.id]
            else:
                self._grants[grant.id] = used
            return used

    async def list_grants(self, now: float | None = None) -> Sequence[Grant]:
        at = self._clock() if now is None else now
        with self._lock:
            return [g for g in self._grants.values() if at < g.expires_at]

    async def revoke_grant(self, grant_id: str) -> bool:
        with self._lock:
            return self._grants.pop(grant_id, None) is not None

    # -- re-authentication -------------------------------------------------------------
    async def record_reauth(self, subject: str, method: str, at: float) -> None:
        with self._lock:
            key = (subject, method)
            self._reauth[key] = max(at, self._reauth.get(key, at))

    async def last_reauth(self, subject: str, method: str) -> float | None:
        with self._lock:
            return self._reauth.get((subject, method))

    async def set_secret(self, name: str, value: str) -> None:
        with self._lock:
            self._secrets[name] = value

    async def get_secret(self, name: str) -> str | None:
        with self._lock:
            return self._secrets.get(name)

    async def use_otp(self, subject: str, timecode: int) -> bool:
        with self._lock:
            if (subject, timecode) in self._otp:
                return False
            self._otp.add((subject, timecode))
            return True

    async def record_failure(self, subject: str, at: float, window: float) -> int:
        with self._lock:
            kept = [t for t in self._failures.get(subject, []) if t > at - window]
            kept.append(at)
            self._failures[subject] = kept
            return len(kept)

    async def clear_failures(self, subject: str) -> None:
        with self._lock:
            self._failures.pop(subject, None)

    async def set_lockout(self, subject: str, until: float) -> None:
        with self._lock:
            self._lockouts[subject] = until

    async def lockout_until(self, subject: str) -> float | None:
        with self._lock:
            return self._lockouts.get(subject)

    # -- risk signals ------------------------------------------------------------------
    async def record_event(self, key: str, at: float) -> None:
        with self._lock:
            self._events.setdefault(key, []).append(at)

    async def count_events(self, key: str, since: float) -> int:
        with self._lock:
            return sum(1 for t in self._events.get(key, ()) if t >= since)

    async def first_use(self, principal: str, server: str, tool: str) -> bool:
        with self._lock:
            key = (principal, server, tool)
            if key in self._first_use:
                return False
            self._first_use.add(key)
            return True

    async def set_cooldown(self, key: str, until: float, reason: str) -> None:
        with self._lock:
            self._cooldowns[key] = (until, reason)

    async def get_cooldown(self, key: str, now: float) -> str | None:
        with self._lock:
            entry = self._cooldowns.get(key)
        return entry[1] if entry is not None and now < entry[0] else None

    # -- MCP tool pins -----------------------------------------------------------------
    async def get_pin(self, server: str, tool: str) -> str | None:
        with self._lock:
            return self._pins.get((server, tool))

    async def set_pin(self, server: str, tool: str, definition_hash: str) -> None:
        with self._lock:
            self._pins[(server, tool)] = definition_hash

    async def put_definition(self, definition_hash: str, definition: str) -> None:
        with self._lock:
            self._definitions.setdefault(definition_hash, definition)

    async def get_definition(self, definition_hash: str) -> str | None:
        with self._lock:
            return self._definitions.get(definition_hash)

    async def list_pins(self) -> Sequence[tuple[str, str, str]]:
        with self._lock:
            return sorted((s, t, h) for (s, t), h in self._pins.items())

