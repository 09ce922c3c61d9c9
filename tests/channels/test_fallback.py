"""Fallback(primary, secondary): the secondary is asked only when the primary fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard import Guard, Policy
from agentguard.audit.memory import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.fallback import Fallback
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest, Authorization, Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 5s, deny_cooldown: 1s}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [alice, bob]}
  privileged: {require: approve, approvers: [alice, bob]}
rules:
  - {id: restart, match: {tool: restart}, class: destructive}
  - {id: slack-only, match: {tool: wipe}, class: destructive, channels: [slack]}
"""


def unreachable(name: str, reason: str = "down") -> ScriptedChannel:
    return ScriptedChannel([ChannelAnswer(kind="unreachable", channel=name, reason=reason)],
                           name=name)


class Broken:
    name = "broken"
    verified = True  # a verified channel that fails: the fallback must still answer

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        raise RuntimeError("socket closed")
        yield  # pragma: no cover - makes this an async generator

    async def settled(self, request: ApprovalRequest) -> None:
        raise RuntimeError("still broken")


class Unverified(ScriptedChannel):
    verified = False


async def authorize(
    *channels: object, tool: str = "restart"
) -> tuple[Authorization, MemoryAuditLog]:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY), store=MemoryStore(), audit=audit,
                     channels=list(channels)) as guard:  # type: ignore[arg-type]
        auth = await guard.authorize(ToolCall(tool=tool, args={}, principal=Principal("a")))
    return auth, audit


async def test_primary_answers_and_secondary_is_never_asked() -> None:
    primary = ScriptedChannel([ScriptedChannel.vote("alice")], name="slack")
    secondary = ScriptedChannel([ScriptedChannel.vote("bob", False)], name="console")
    auth, _ = await authorize(Fallback(primary, secondary))
    assert auth.outcome == "approved" and auth.approvers == ("alice",)
    assert len(primary.settled_requests) == 1 and secondary.settled_requests == []


@pytest.mark.parametrize("primary", [unreachable("slack"), Broken()])
async def test_secondary_answers_when_the_primary_fails(primary: object) -> None:
    secondary = ScriptedChannel([ScriptedChannel.vote("bob")], name="console")
    auth, _ = await authorize(Fallback(primary, secondary))  # type: ignore[arg-type]
    assert auth.outcome == "approved" and auth.approvers == ("bob",)
    assert [r.status for r in secondary.settled_requests] == ["approved"]


async def test_both_failing_is_unreachable_naming_both() -> None:
    auth, audit = await authorize(Fallback(unreachable("slack", "no route"),
                                           unreachable("console", "no tty")))
    assert auth.outcome == "unreachable"
    detail = next(e for e in audit.events if e["type"] == "challenge.unreachable")["detail"]
    assert detail == "slack: no route; console: no tty", "each channel named once"


async def test_a_renamed_fallback_names_its_primary_too() -> None:
    auth, audit = await authorize(Fallback(unreachable("slack", "no route"),
                                           unreachable("console", "no tty"), name="chat"))
    detail = next(e for e in audit.events if e["type"] == "challenge.unreachable")["detail"]
    assert auth.outcome == "unreachable" and detail == "chat: slack: no route; console: no tty"


async def test_fallback_keeps_the_primary_name_so_rules_naming_it_match() -> None:
    fallback = Fallback(unreachable("slack"),
                        ScriptedChannel([ScriptedChannel.vote("bob")], name="console"))
    assert fallback.name == "slack"
    auth, _ = await authorize(fallback, tool="wipe")
    assert auth.outcome == "approved"


def test_fallback_is_only_as_verified_as_its_weaker_channel() -> None:
    strong = ScriptedChannel([], name="slack")
    assert Fallback(strong, ScriptedChannel([], name="console")).verified is True
    assert Fallback(strong, Unverified([], name="elicitation")).verified is False
