"""Sample records and a race helper for store tests (used by the conformance suite)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from agentguard.errors import ConflictError
from agentguard.types import (
    ApprovalRequest,
    ApprovalSpec,
    ApprovalVote,
    Grant,
    GrantQuery,
    ReauthSpec,
    new_request_id,
)

__all__ = ["RACERS", "consistent", "race", "sample_grant", "sample_request", "use_args", "vote"]

T = TypeVar("T")

RACERS = 16
"""Concurrent tasks in each race test."""


def sample_request(clock: Callable[[], float], *, quorum: int = 1, timeout: float = 300.0,
                   **overrides: Any) -> ApprovalRequest:
    """A pending request created now and expiring ``timeout`` seconds later."""
    request_id = overrides.pop("id", None) or new_request_id()
    now = clock()
    fields: dict[str, Any] = {
        "id": request_id,
        "call": {
            "server": "local", "tool": "deploy", "principal": {"id": "agent:bot", "kind": "agent"},
            "args": {"env": "production", "replicas": 3, "tags": ["a", "b"], "dry_run": False,
                     "note": "bidi \u202e, ansi \x1b[31m, zero-width \u200b, emoji \U0001f680"},
            "session_id": None,
        },
        "call_hash": hashlib.sha256(request_id.encode()).hexdigest(),
        "created_at": now,
        "expires_at": now + timeout,
        "rule_id": "prod-deploy",
        "reason": "deploy to production outside the change window",
        "privilege": "destructive",
        "labels": ("deploy",),
        "approval": ApprovalSpec(approvers=("alice", "bob", "group:oncall"), quorum=quorum,
                                 timeout=timeout, channels=("console",), max_grant=900.0),
        "reauth": ReauthSpec(method="totp", max_age=900.0, subject="approver"),
    }
    fields.update(overrides)
    return ApprovalRequest(**fields)


def sample_grant(clock: Callable[[], float], *, ttl: float = 900.0, **overrides: Any) -> Grant:
    """A ``ttl`` grant for ``agent:bot`` on ``git/push`` up to rank 2, expiring in ``ttl`` s."""
    fields: dict[str, Any] = {
        "id": new_request_id(), "scope": "ttl", "principal": "agent:bot", "server": "git",
        "tool": "push", "max_rank": 2, "expires_at": clock() + ttl, "granted_by": "alice",
        "created_at": clock(),
    }
    fields.update(overrides)
    return Grant(**fields)


def consistent(request: ApprovalRequest) -> ApprovalRequest:
    """``request`` with a call hash that matches its stored call, as the guard writes them
    (approver tools refuse to approve a call that does not hash to its call hash)."""
    from agentguard.approvals import hashed_call_fields
    from agentguard.canonical import canonical_bytes, sha256_hex

    call = {"tool_definition_hash": None, "session_id": None, **request.call}
    return dataclasses.replace(request, call=call, call_hash=sha256_hex(canonical_bytes(
        hashed_call_fields(call))))


def vote(approver: str, approve: bool = True, at: float = 0.0, **overrides: Any) -> ApprovalVote:
    """An approval vote over the ``test`` channel."""
    return ApprovalVote(approver=approver, approve=approve, at=at, channel="test", **overrides)


async def race(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T | ConflictError]:
    """Run ``calls`` concurrently; each result is the return value or its ConflictError."""
    results: list[T | ConflictError] = [ConflictError("did not run")] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[index] = await call()
        except ConflictError as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    return results


def use_args(clock: Callable[[], float], **overrides: Any) -> dict[str, Any]:
    """Arguments for ``Store.use_grant(**use_args(clock))`` matching :func:`sample_grant`: the
    query (its fields overridable by name) and ``now=clock()``."""
    now = overrides.pop("now", clock())
    fields: dict[str, Any] = {
        "principal": "agent:bot", "server": "git", "tool": "push", "rank": 2,
        "call_hash": "hash-1", "session_id": None, "kind": "approval",
    }
    fields.update(overrides)
    return {"query": GrantQuery(**fields), "now": now}
