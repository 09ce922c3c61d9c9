"""Durable holds: a caller that will not wait for the verdict, and the identical call that
comes back for it (another task, another process, after a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentguard import Guard, Policy
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.errors import ApprovalPending
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 1h, deny_cooldown: 1s}
classes:
  read: {require: allow}
  destructive: {require: approve, approvers: [alice, bob]}
rules: [{id: deploy, match: {tool: deploy}, class: destructive}]
"""


class Presenter:
    """A channel that can deliver a request without waiting (like Slack or the terminal)."""

    name = "presenter"
    verified = True

    def __init__(self) -> None:
        self.presented: list[str] = []
        self.asked = 0

    async def present(self, request: ApprovalRequest) -> str | None:
        self.presented.append(request.id)
        return None

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.asked += 1
        if False:  # pragma: no cover - an async generator that yields nothing
            yield ChannelAnswer(kind="closed", channel=self.name)

    async def settled(self, request: ApprovalRequest) -> None:
        return None


def deploy(env: str = "production", acting_for: str | None = "carol") -> ToolCall:
    return ToolCall(tool="deploy", args={"env": env}, principal=Principal("agent:bot"),
                    context=CallContext(acting_for=acting_for))


def guard_on(path: Path, audit: MemoryAuditLog, channel: Presenter) -> Guard:
    return Guard(Policy.from_yaml(POLICY), store=SQLiteStore(path / "s.db"), audit=audit,
                 channels=[channel])


async def test_a_hold_returns_pending_and_the_identical_retry_runs_once_approved(
    tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    channel = Presenter()
    first = await guard_on(tmp_path, audit, channel).authorize(deploy(), wait=0)
    assert first.outcome == "pending" and first.request_id is not None
    assert channel.presented == [first.request_id] and channel.asked == 0
    message = first.message()
    assert "Retry later" in message and "will not help" not in message
    with pytest.raises(ApprovalPending):
        first.raise_for_refusal()
    # A restarted process asks again: it joins the same request, nobody is asked twice.
    restarted = guard_on(tmp_path, audit, Presenter())
    again = await restarted.authorize(deploy(), wait=0)
    assert again.outcome == "pending" and again.request_id == first.request_id
    # A changed call is a different call: it needs its own approval.
    other = await restarted.authorize(deploy("staging"), wait=0)
    assert other.outcome == "pending" and other.request_id != first.request_id
    await cast_vote(store=restarted.store, audit=audit, request_id=first.request_id,
                    approver="alice", approve=True, channel="cli")
    ran = await restarted.authorize(deploy(), wait=0)
    assert ran.outcome == "approved" and ran.request_id == first.request_id
    # Exactly once: the next identical call is a new request.
    after = await restarted.authorize(deploy(), wait=0)
    assert after.outcome == "pending" and after.request_id not in (first.request_id, None)
    types = [e["type"] for e in audit.events]
    assert types.count("call.executed") == 1
    assert types.count("challenge.pending") == 4


async def test_another_human_behind_the_same_agent_does_not_ride_the_approval(
    tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    guard = guard_on(tmp_path, audit, Presenter())
    held = await guard.authorize(deploy(acting_for="carol"), wait=0)
    await cast_vote(store=guard.store, audit=audit, request_id=held.request_id or "",
                    approver="alice", approve=True, channel="cli")
    dave = await guard.authorize(deploy(acting_for="dave"), wait=0)
    assert dave.outcome == "pending" and dave.request_id != held.request_id
    carol = await guard.authorize(deploy(acting_for="carol"), wait=0)
    assert carol.outcome == "approved"


async def test_a_denial_answers_the_retry_with_its_reason(tmp_path: Path) -> None:
    audit = MemoryAuditLog()
    guard = guard_on(tmp_path, audit, Presenter())
    held = await guard.authorize(deploy(), wait=0)
    await cast_vote(store=guard.store, audit=audit, request_id=held.request_id or "",
                    approver="bob", approve=False, channel="cli",
                    reason="not during the incident \x1b[31m")
    retry = await guard.authorize(deploy(), wait=0)
    assert retry.outcome == "denied" and retry.request_id == held.request_id
    assert "not during the incident" in retry.message()
    assert "\x1b" not in retry.message()  # the approver's text reaches the model escaped
    assert "will not help" in retry.message()


async def test_a_hold_with_no_channel_that_can_deliver_it_is_unreachable(
    tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(tmp_path / "s.db"), audit=audit)
    auth = await guard.authorize(deploy(), wait=0)
    assert auth.outcome == "unreachable"
    request = (await guard.store.list_requests(limit=1))[0]
    assert request.status == "cancelled"
