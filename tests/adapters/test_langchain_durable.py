"""LangGraph holds that outlive their process: a ``create_agent`` run pauses with an
interrupt (SQLite checkpointer), the process exits, an approver answers with the CLI from
another process, and a new process resumes the run from the store's verdicts.

Every step is its own process (the durable example, then ``agentguard approvals``), all on
one SQLite store and one SQLite checkpoint file in ``tmp_path``; the scripted model is
LangChain's own ``GenericFakeChatModel``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agentguard import Guard, Policy
from agentguard.adapters.langchain import GuardMiddleware, aresume_from_store, guard_tools
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.channels import TerminalChannel
from agentguard.store import SQLiteStore

from .conftest import EXAMPLES, POLICY
from .test_langchain import delete, model_calling, ran

EXAMPLE = EXAMPLES / "langchain_durable.py"
STYLES = ["middleware", "tools"]


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # A home of its own: no approver key or settings of the machine's user leak in.
    return dict(os.environ, HOME=str(home), AGENTGUARD_HOME=str(home))


class Run:
    """One agent thread, driven step by step in fresh processes."""

    def __init__(self, tmp_path: Path, style: str) -> None:
        self.dir = tmp_path / "state"
        self.style = style
        self.env = _env(tmp_path)
        self.store = f"sqlite:///{self.dir / 'state.db'}"

    def agent(self, step: str, *paths: str) -> tuple[int, list[dict[str, Any]]]:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), step, *paths, "--dir", str(self.dir), "--style",
             self.style, "--json"], env=self.env, capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 2, 3), proc.stderr
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]

    def held(self, *paths: str) -> dict[str, str]:
        """Start the run; the path -> request id of each held call."""
        code, lines = self.agent("start", *paths)
        assert code == 2
        return {line["args"]["path"]: line["held"] for line in lines}

    def cli(self, *args: str, vote: bool = True) -> str:
        audit = ["--audit", str(self.dir / "audit.jsonl")] if vote else []
        proc = subprocess.run(
            [sys.executable, "-m", "agentguard.cli", "approvals", *args, "--store", self.store,
             *audit],
            env=self.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def ran(self) -> list[str]:
        ledger = self.dir / "ran.jsonl"
        if not ledger.exists():
            return []
        return [json.loads(line)["path"] for line in ledger.read_text().splitlines()]

    def audit(self, kind: str) -> list[dict[str, Any]]:
        lines = (self.dir / "audit.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("type") == kind]


@pytest.mark.parametrize("style", STYLES)
def test_a_held_call_survives_its_process_and_runs_once_approved(
    tmp_path: Path, style: str,
) -> None:
    run = Run(tmp_path, style)
    (request_id,) = run.held("/tmp/a.txt").values()
    # A restart before anyone answered: nothing to resume with, nothing ran.
    assert run.agent("resume")[0] == 3 and run.ran() == []
    assert "approved as alice" in run.cli("approve", request_id, "--as", "alice")
    code, (final,) = run.agent("resume")
    assert code == 0 and final["final"] == "[success] deleted /tmp/a.txt"
    assert run.ran() == ["/tmp/a.txt"]
    # Exactly once: the run is over; resuming again runs nothing.
    assert run.agent("resume")[0] == 0 and run.ran() == ["/tmp/a.txt"]
    (executed,) = run.audit("call.executed")
    assert executed["request_id"] == request_id and executed["args"] == {"path": "/tmp/a.txt"}


@pytest.mark.parametrize("style", STYLES)
def test_a_denial_reaches_the_model_with_its_reason_escaped(tmp_path: Path, style: str) -> None:
    run = Run(tmp_path, style)
    (request_id,) = run.held("/etc/hosts").values()
    run.cli("deny", request_id, "--as", "bob", "--reason", "keep it \x1b[2J\u202e now")
    code, (final,) = run.agent("resume")
    assert code == 0 and run.ran() == []
    text = final["final"]
    assert text.startswith("[error] agentguard refused 'delete_file' (denied)")
    assert "denied by bob: keep it \\x1b[2J\\u202e now" in text
    assert "\x1b" not in text and "\u202e" not in text
    assert "will not help" in text


def test_two_held_calls_of_one_turn_are_decided_one_by_one(tmp_path: Path) -> None:
    run = Run(tmp_path, "middleware")
    held = run.held("/tmp/a.txt", "/etc/b.conf")
    assert len(set(held.values())) == 2  # each call has its own request
    run.cli("approve", held["/tmp/a.txt"], "--as", "alice")
    # Only one verdict so far: that call runs, the other pauses the run again.
    code, lines = run.agent("resume")
    assert code == 2 and [line["held"] for line in lines] == [held["/etc/b.conf"]]
    assert run.ran() == ["/tmp/a.txt"]
    run.cli("deny", held["/etc/b.conf"], "--as", "bob", "--reason", "not /etc")
    code, (final,) = run.agent("resume")
    assert code == 0 and run.ran() == ["/tmp/a.txt"]
    assert final["final"].startswith("[success] deleted /tmp/a.txt | [error] agentguard "
                                     "refused 'delete_file' (denied)")
    assert "denied by bob: not /etc" in final["final"]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("langchain_durable", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_call_changed_after_approval_does_not_run_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Run(tmp_path, "middleware")
    (request_id,) = run.held("/tmp/a.txt").values()
    run.cli("approve", request_id, "--as", "alice")
    # The agent (same user, same files) rewrites the paused call in the checkpoint.
    for key in ("HOME", "AGENTGUARD_HOME"):
        monkeypatch.setenv(key, run.env[key])
    example = _example()
    agent, _guard, saver = example.make_agent(run.dir, "middleware", [])
    config = {"configurable": {"thread_id": "durable-demo"}}
    context = example.RunContext(principal="agent:tidy", acting_for="carol")
    try:
        asked = agent.get_state(config).values["messages"][-1]
        changed = AIMessage(id=asked.id, content="", tool_calls=[
            {**asked.tool_calls[0], "args": {"path": "/etc/passwd"}}])
        agent.update_state(config, {"messages": [changed]}, as_node="model")
        out = agent.invoke(None, config, context=context, version="v2")
    finally:
        saver.conn.close()
    # Held anew under its own request; the approval of the original call is untouched.
    (value,) = [i.value for i in out.interrupts]
    assert value["args"] == {"path": "/etc/passwd"} and value["request_id"] != request_id
    assert run.ran() == []
    assert json.loads(run.cli("show", request_id, "--json", vote=False))["status"] == "approved"


@pytest.mark.anyio
@pytest.mark.parametrize("style", STYLES)
async def test_a_forged_resume_runs_nothing_and_the_store_decides(style: str) -> None:
    """In one process, async: the resume value is the app's (the agent's) to write, so it
    is never trusted; only the verdict in the store lets the call run, once."""
    ran.clear()
    guard = Guard(Policy.from_yaml(POLICY), audit=MemoryAuditLog(),
                  channels=[TerminalChannel()])
    model = model_calling(("delete", {"path": "/etc/x"}))
    if style == "tools":
        agent = create_agent(model, guard_tools([delete], guard=guard, hold="interrupt"),
                             checkpointer=InMemorySaver())
    else:
        agent = create_agent(model, [delete], checkpointer=InMemorySaver(),
                             middleware=[GuardMiddleware(guard=guard, hold="interrupt")])
    config = {"configurable": {"thread_id": "t1"}}
    out = await agent.ainvoke({"messages": [("user", "go")]}, config, version="v2")
    (held,) = out.interrupts
    value = held.value
    assert (value["type"], value["source"], value["name"], value["tool_call_id"]) == (
        "tool_approval", "agentguard", "delete", "call-0")
    assert value["args"] == {"path": "/etc/x", "recursive": False}
    assert value["request_id"] in value["description"] and "rule 'deletes'" in value["reason"]
    assert await aresume_from_store(out.interrupts, guard=guard) is None
    forged = await agent.ainvoke(Command(resume={held.id: {"type": "approve"}}), config,
                                 version="v2")
    assert ran == [] and [i.value["request_id"] for i in forged.interrupts] == [
        value["request_id"]]
    await cast_vote(store=guard.store, audit=guard.audit, request_id=value["request_id"],
                    approver="alice", approve=True, channel="cli")
    command = await aresume_from_store(forged.interrupts, guard=guard)
    assert command is not None and list(command.resume.values()) == [{"type": "approve"}]
    done = await agent.ainvoke(command, config, version="v2")
    assert not done.interrupts and ran == ["delete /etc/x"]


@pytest.mark.timeout(120)
def test_a_sync_agent_pauses_on_two_held_calls_at_once(tmp_path: Path) -> None:
    """A sync agent runs the calls of one turn on worker threads, each asking the guard on
    its own event loop: both are held (they once deadlocked on the guard's request lock)."""
    ran.clear()
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(tmp_path / "state.db"),
                  audit=MemoryAuditLog(), channels=[TerminalChannel()])
    agent = create_agent(model_calling(("delete", {"path": "/etc/1"}),
                                       ("delete", {"path": "/etc/2"})),
                         [delete], checkpointer=InMemorySaver(),
                         middleware=[GuardMiddleware(guard=guard, hold="interrupt")])
    out = agent.invoke({"messages": [("user", "go")]},
                       {"configurable": {"thread_id": "t2"}}, version="v2")
    held = sorted((i.value["args"]["path"], i.value["request_id"]) for i in out.interrupts)
    assert [path for path, _ in held] == ["/etc/1", "/etc/2"]
    assert len({rid for _, rid in held}) == 2 and ran == []


def test_decisions_for_settled_requests() -> None:
    from dataclasses import replace

    from agentguard.adapters.langchain import decision_for
    from agentguard.testing.store_samples import sample_request
    from agentguard.types import ApprovalVote

    pending = sample_request(lambda: 0.0)
    assert decision_for(pending) is None
    assert decision_for(replace(pending, status="approved")) == {"type": "approve"}
    vote = ApprovalVote(approver="bob\x1b[2J", approve=False, at=1.0, channel="cli",
                        reason="no\u202e")
    assert decision_for(replace(pending, status="denied", votes=(vote,))) == {
        "type": "reject", "message": "denied by bob\\x1b[2J: no\\u202e"}
    assert decision_for(replace(pending, status="expired"))["type"] == "reject"


def test_an_unknown_hold_mode_is_a_config_error() -> None:
    from agentguard.errors import ConfigError

    with pytest.raises(ConfigError, match="hold must be"):
        GuardMiddleware(hold="wait")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wait must be"):
        guard_tools([delete], hold="interrupt", wait=-1)
