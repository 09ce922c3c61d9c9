"""Fixtures for the adapter tests: a guard on a small policy, and the scripted model server
the examples use (real OpenAI / Anthropic clients talk to it over 127.0.0.1)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from agentguard import Guard, Policy
from agentguard.audit import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.types import ApprovalRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "adapters"


def _load_scripted_llm() -> Any:
    spec = importlib.util.spec_from_file_location("scripted_llm", EXAMPLES / "scripted_llm.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scripted_llm", module)
    spec.loader.exec_module(module)
    return module


scripted_llm = _load_scripted_llm()

POLICY = """
version: 1
# Agents here make several held calls in one turn, which frameworks run in parallel.
defaults: {unknown_tool: approve, timeout: 30s, deny_cooldown: 0s, pending_per_class: 5}
groups: {oncall: [alice, bob]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
rules:
  - {id: reads, match: {tool: ["get_*", "peek"]}, class: read}
  - {id: no-drops, match: {tool: drop}, require: deny}
  - {id: deletes, match: {tool: delete}, class: destructive}
"""


class RecordingChannel(ScriptedChannel):
    """A scripted approver that approves paths under /tmp and records what it was asked."""

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(self._decide, delay=delay)
        self.asked: list[ApprovalRequest] = []

    def _decide(self, request: ApprovalRequest) -> Iterable[ChannelAnswer]:
        self.asked.append(request)
        path = str(request.call["args"].get("path", ""))
        ok = path.startswith("/tmp")
        return [self.vote("alice", ok, reason="" if ok else "not under /tmp")]


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


@pytest.fixture
def make_guard() -> Callable[..., Guard]:
    def make(channel: ScriptedChannel | None = None, policy: str = POLICY) -> Guard:
        return Guard(Policy.from_yaml(policy), audit=MemoryAuditLog(),
                     channels=[channel or RecordingChannel()])

    return make


@pytest.fixture
def guard(make_guard: Callable[..., Guard], channel: RecordingChannel) -> Guard:
    return make_guard(channel)


@pytest.fixture(autouse=True)
def _no_agents_tracing() -> None:
    """The Agents SDK would export traces to the internet; tests must stay offline."""
    try:
        from agents import set_tracing_disabled
    except ImportError:  # pragma: no cover
        return
    set_tracing_disabled(True)


def events(guard: Guard, kind: str | None = None) -> list[dict[str, Any]]:
    log = guard.audit
    assert isinstance(log, MemoryAuditLog)
    return [e for e in log.events if kind is None or e["type"] == kind]
