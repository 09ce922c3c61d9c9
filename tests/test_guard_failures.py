"""Fail closed: a broken audit log or store refuses calls (and says which), never runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentguard import Guard, Policy
from agentguard.audit import JsonlAuditLog
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import SQLiteStore
from agentguard.types import Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 2s, log_allows: true}
rules:
  - {id: reads, match: {tool: get_status}, class: read}
  - {id: secrets, match: {tool: read_secret}, class: privileged, labels: [secret]}
  - {id: drops, match: {tool: drop}, require: deny}
"""


def call(tool: str) -> ToolCall:
    return ToolCall(tool=tool, args={"x": 1}, principal=Principal("agent:a"))


@pytest.fixture
def full_disk_log(tmp_path: Path) -> Path:
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available")
    log = tmp_path / "audit.jsonl"
    log.symlink_to("/dev/full")
    return log


async def test_audit_write_failure_refuses_privileged_calls(full_disk_log: Path) -> None:
    approver = ScriptedChannel([ScriptedChannel.vote("alice")])
    guard = Guard(Policy.from_yaml(POLICY), audit=JsonlAuditLog(full_disk_log),
                  channels=[approver])
    async with guard:
        secret = await guard.authorize(call("read_secret"))
        routine = await guard.authorize(call("get_status"))
        denied = await guard.authorize(call("drop"))
    assert secret.outcome == "unreachable" and "failed closed" in secret.reason
    assert approver.settled_requests == []  # nobody was even asked: no record, no question
    # A routine read with no labels still passes when only the allow record cannot be written.
    assert routine.outcome == "allowed"
    assert not denied.allowed


async def test_store_failure_refuses(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(tmp_path / "not-a-dir" / "s.db"),
                  channels=[ScriptedChannel([ScriptedChannel.vote("alice")])])
    auth = await guard.authorize(call("read_secret"))
    assert auth.outcome == "unreachable"
    assert "SQLite" in auth.reason or "store" in auth.reason.lower()


async def test_arguments_that_are_not_json_are_refused_as_invalid() -> None:
    guard = Guard(Policy.from_yaml(POLICY))
    bad = ToolCall(tool="read_secret", args={"x": {1, 2}}, principal=Principal("agent:a"))
    auth = await guard.authorize(bad)
    assert auth.outcome == "invalid" and "set is not JSON" in auth.reason


async def test_classifier_error_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_yaml(POLICY)

    def broken(call: ToolCall) -> None:
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(policy, "classify", broken)
    auth = await Guard(policy).authorize(
        ToolCall(tool="read_secret", args={"x": 1}, principal=Principal("agent:a")))
    assert auth.outcome == "unreachable" and "failed closed" in auth.reason


async def test_oversized_arguments_are_refused_and_audited_compactly() -> None:
    from agentguard.audit import MemoryAuditLog

    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(POLICY), audit=audit)
    big = ToolCall(tool="read_secret", args={"blob": "x" * 5_000_000}, principal=Principal("a"))
    auth = await guard.authorize(big)
    assert auth.outcome == "denied" and "max_args_bytes" in auth.reason
    assert audit.events[0]["args"]["truncated"] is True
    assert len(str(audit.events[0])) < 20_000


async def test_deep_nesting_is_refused_not_a_crash() -> None:
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    guard = Guard(Policy.from_yaml(POLICY))
    auth = await guard.authorize(ToolCall(tool="read_secret", args={"n": nested},
                                          principal=Principal("a")))
    assert not auth.allowed and "nested too deeply" in auth.reason
