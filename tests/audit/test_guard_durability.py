"""The guard and group commit: a held call goes on only once all its audit records are
durable (read back by a fresh reader), and a failed group write refuses every call in it
without leaving a false record behind."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy
from agentguard.audit import JsonlAuditLog, Redactor, read_events, verify_log
from agentguard.channels.base import ChannelAnswer
from agentguard.types import ApprovalRequest, Principal, ToolCall
from tests.audit.helpers import KEY

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 30s}
rules:
  - {id: secrets, match: {tool: read_secret}, class: privileged, require: approve}
"""
N = 8


class GatedChannel:
    """Approves every request once the test opens the gate (a real channel, held open)."""

    verified = True
    name = "gated"

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.asked: list[str] = []

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.asked.append(request.id)
        await self.gate.wait()
        yield ChannelAnswer(kind="vote", channel=self.name, approver="alice", approve=True)

    async def settled(self, request: ApprovalRequest) -> None:
        pass


def call(i: int) -> ToolCall:
    return ToolCall(tool="read_secret", args={"n": i}, principal=Principal(f"agent:a{i}"))


async def test_held_calls_records_are_durable_before_their_tools_run(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    channel = GatedChannel()
    seen: dict[str, set[str]] = {}

    async def tool_run(guard: Guard, i: int) -> None:
        auth = await guard.authorize(call(i))
        assert auth.outcome == "approved", auth.reason
        # What the tool would do first: a fresh reader already finds every record of it.
        mine = [e for e in read_events(path) if e.get("request_id") == auth.request_id]
        seen[auth.request_id or ""] = {e["type"] for e in mine}

    guard = Guard(Policy.from_yaml(POLICY), channels=[channel],
                  audit=JsonlAuditLog(path, redactor=Redactor(KEY)))
    async with guard, anyio.create_task_group() as tg:
        for i in range(N):
            tg.start_soon(tool_run, guard, i)
        while len(channel.asked) < N:
            await anyio.sleep(0.01)
        channel.gate.set()
    assert len(seen) == N
    for types in seen.values():
        assert {"challenge.created", "call.executed"} <= types
    assert verify_log(path).ok


async def test_failed_group_write_refuses_every_call_and_audits_nothing_false(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    channel = GatedChannel()
    ran: list[int] = []
    results = {}

    async def tool_run(guard: Guard, i: int) -> None:
        auth = await guard.authorize(call(i))
        results[i] = auth
        if auth.allowed:
            ran.append(i)

    log = JsonlAuditLog(path, redactor=Redactor(KEY))
    guard = Guard(Policy.from_yaml(POLICY), channels=[channel], audit=log)
    async with guard, anyio.create_task_group() as tg:
        for i in range(N):
            tg.start_soon(tool_run, guard, i)
        while len(channel.asked) < N:
            await anyio.sleep(0.01)
        # The agent moves the log aside while every call waits for its human: the next
        # group write (the votes, call.executed) fails.
        os.rename(path, tmp_path / "moved.jsonl")
        channel.gate.set()
    assert ran == []
    assert all(a.outcome == "unreachable" and "failed closed" in a.reason
               for a in results.values()), [a.reason for a in results.values()]
    assert not path.exists()  # the writer did not start a fresh chain behind the move
    moved = tmp_path / "moved.jsonl"
    kinds = [e["type"] for e in read_events(moved)]
    assert kinds == ["challenge.created"] * N  # no vote, approval or execution was claimed
