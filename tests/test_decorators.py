"""The @guarded decorator: sync and async, bare and with arguments, metadata, refusals."""

from __future__ import annotations

import inspect
import typing

import pytest

from agentguard import (
    ApprovalExpired,
    CallDenied,
    ChannelUnreachable,
    ConfigError,
    Guard,
    Policy,
    ToolCallRefused,
    UsageError,
    acting_as,
    guarded,
    using_guard,
)
from agentguard.audit import MemoryAuditLog
from agentguard.channels.scripted import ScriptedChannel

POLICY = """
defaults: {timeout: 1s}
rules:
  - {id: reads, match: {tool: "get_*"}, class: read}
  - {id: no-drops, match: {tool: drop}, require: deny}
  - {id: deletes, match: {tool: delete}, class: destructive}
"""

runs: list[str] = []


@guarded
def get_user(user_id: int, *, verbose: bool = False) -> str:
    """Fetch a user."""
    runs.append(f"get_user {user_id}")
    return f"user {user_id}"


@guarded(name="delete", labels=["data"])
async def delete_file(path: str) -> str:
    """Delete a file."""
    runs.append(f"delete {path}")
    return f"deleted {path}"


@guarded
def drop(table: str) -> None:
    runs.append(f"drop {table}")


@guarded(privilege="read")
def helper_with_declared_class(x: int) -> int:
    return x * 2


@pytest.fixture(autouse=True)
def _clear() -> None:
    runs.clear()


def make_guard(*answers) -> Guard:
    return Guard(Policy.from_yaml(POLICY), audit=MemoryAuditLog(),
                 channels=[ScriptedChannel(list(answers))] if answers else [])


def test_metadata_is_preserved() -> None:
    assert get_user.__name__ == "get_user"
    assert get_user.__doc__ == "Fetch a user."
    assert list(inspect.signature(get_user).parameters) == ["user_id", "verbose"]
    assert typing.get_type_hints(get_user) == {"user_id": int, "verbose": bool, "return": str}
    assert inspect.iscoroutinefunction(delete_file)
    assert delete_file.__agentguard__ == {"tool": "delete", "server": "local"}


def test_no_guard_configured_fails_closed() -> None:
    with pytest.raises(ConfigError, match="no agentguard Guard is configured"):
        get_user(1)
    assert runs == []


def test_routine_sync_call_runs() -> None:
    with using_guard(make_guard()):
        assert get_user(7) == "user 7"
        assert helper_with_declared_class(2) == 4
    assert runs == ["get_user 7"]


def test_policy_deny_raises_denied() -> None:
    with using_guard(make_guard()), pytest.raises(CallDenied) as info:
        drop("users")
    assert info.value.kind == "denied" and info.value.rule_id == "no-drops"
    assert runs == []


def test_held_sync_call_runs_after_approval() -> None:
    guard = make_guard(ScriptedChannel.vote("alice"))
    with using_guard(guard), acting_as("user:bob", session_id="s1"):
        # An unknown tool: the default requirement (approve) applies.
        @guarded
        def rotate_key(name: str) -> str:
            runs.append(f"rotate {name}")
            return "rotated"

        assert rotate_key("k1") == "rotated"
    assert runs == ["rotate k1"]
    executed = [e for e in guard.audit.events if e["type"] == "call.executed"]
    assert executed[0]["principal"] == "user:bob" and executed[0]["session_id"] == "s1"


@pytest.mark.anyio
async def test_async_refusals_carry_their_kind() -> None:
    with using_guard(make_guard(ScriptedChannel.vote("alice", False, reason="no"))), \
            pytest.raises(CallDenied, match="denied by alice"):
        await delete_file("/etc/passwd")
    with using_guard(make_guard()):
        with pytest.raises(ChannelUnreachable) as info:
            await delete_file("/tmp/a")
        assert info.value.kind == "unreachable"
    with using_guard(Guard(Policy.from_yaml(POLICY), channels=[ScriptedChannel([])])):
        with pytest.raises(ApprovalExpired) as expired:
            await delete_file("/tmp/b")
        assert isinstance(expired.value, ToolCallRefused)
        assert expired.value.request_id
    assert runs == []


@pytest.mark.anyio
async def test_async_call_approved() -> None:
    with using_guard(make_guard(ScriptedChannel.vote("alice"))):
        assert await delete_file("/tmp/a") == "deleted /tmp/a"
    assert runs == ["delete /tmp/a"]


@pytest.mark.anyio
async def test_sync_guarded_call_inside_event_loop_is_a_usage_error() -> None:
    with using_guard(make_guard()), pytest.raises(UsageError, match="running event loop"):
        drop("t")
    # The allow path needs no loop and still works here.
    with using_guard(make_guard()):
        assert get_user(1) == "user 1"
