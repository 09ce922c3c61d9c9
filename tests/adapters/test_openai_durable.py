"""Agents SDK holds that outlive their process: the held calls are the run's interruptions,
the run state is saved, an approver decides with the CLI from another process, and a new
process resumes the saved run (a custom ``agents.Model`` stands in for the LLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool
from agents.exceptions import ModelBehaviorError
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from agentguard import Guard, Policy
from agentguard.adapters.openai import (
    guard_function_tools,
    resume_durable,
    run_durable,
    run_guarded,
)
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.channels import TerminalChannel
from agentguard.store import SQLiteStore

from .conftest import EXAMPLES, RecordingChannel, events

pytestmark = pytest.mark.anyio

EXAMPLE = EXAMPLES / "openai_agents_durable.py"
ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def step(*args: str, home: Path) -> str:
    env = dict(os.environ, AGENTGUARD_HOME=str(home))
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def held(out: str) -> dict[str, str]:
    """Request id by deleted path, from the example's ``held:`` lines."""
    found = {}
    for line in out.splitlines():
        if "held: " in line:
            call, rid = line.split("held: ", 1)[1].rsplit(" request ", 1)
            found[json.loads(call.split("(", 1)[1][:-1])["path"]] = rid
    return found


def test_held_calls_outlive_the_process_one_approved_one_denied(tmp_path: Path) -> None:
    first = held(step(str(EXAMPLE), "start", str(tmp_path), home=tmp_path))
    assert set(first) == {"/tmp/build", "/etc/hosts"}
    assert len(set(first.values())) == 2  # two calls in one turn, each held on its own
    saved = (tmp_path / "state.json").read_text()
    # Resumed before anyone decided: still pending, the same requests, nothing ran.
    assert held(step(str(EXAMPLE), "resume", str(tmp_path), home=tmp_path)) == first
    assert not (tmp_path / "ran.jsonl").exists()

    cli = ["-m", "agentguard.cli", "approvals"]
    opts = ["--store", f"sqlite:///{tmp_path / 'agentguard.db'}",
            "--audit", str(tmp_path / "audit.jsonl")]
    step(*cli, "approve", first["/tmp/build"], "--as", "alice", *opts, home=tmp_path)
    step(*cli, "deny", first["/etc/hosts"], "--as", "bob", "--reason",
         "hosts is managed \x1b[31mby puppet", *opts, home=tmp_path)

    out = step(str(EXAMPLE), "resume", str(tmp_path), home=tmp_path)
    assert "finished: the tools said: deleted /tmp/build | agentguard refused" in out
    # The model reads the approver's reason, escaped.
    assert "denied by bob: hosts is managed \\x1b[31mby puppet" in out
    assert "\x1b" not in out
    ran_lines = (tmp_path / "ran.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in ran_lines] == [
        {"tool": "delete_file", "path": "/tmp/build"}]

    # Exactly once: replaying the state saved before the approval runs nothing again (the
    # approval was used; the identical call is a new request).
    (tmp_path / "state.json").write_text(saved)
    again = held(step(str(EXAMPLE), "resume", str(tmp_path), home=tmp_path))
    assert again["/tmp/build"] != first["/tmp/build"]
    assert (tmp_path / "ran.jsonl").read_text().splitlines() == ran_lines
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["type"] for e in audit].count("call.executed") == 1
    verify = subprocess.run([sys.executable, "-m", "agentguard.cli", "audit", "verify",
                             str(tmp_path / "audit.jsonl")], capture_output=True, text=True,
                            env=dict(os.environ, AGENTGUARD_HOME=str(tmp_path)), timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


class CallingModel(Model):
    """Makes the given tool calls, then reports the tools' outputs (reads only its input)."""

    def __init__(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        items = input if isinstance(input, list) else []
        outputs = [str(i["output"]) for i in items
                   if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if outputs:
            out: list[Any] = [ResponseOutputMessage(
                id="m", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", annotations=[],
                                            text=" | ".join(outputs))])]
        else:
            out = [ResponseFunctionToolCall(type="function_call", call_id=f"c{n}", name=name,
                                            id=f"f{n}", status="completed",
                                            arguments=json.dumps(args))
                   for n, (name, args) in enumerate(self.calls)]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def peek(path: str) -> str:
    """Read a file (the policy allows it)."""
    ran.append(f"peek {path}")
    return f"contents of {path}"


def delete(path: str) -> str:
    """Delete a file."""
    ran.append(f"delete {path}")
    return f"deleted {path}"


def drop(table: str) -> str:
    """Drop a table (the policy denies it)."""
    ran.append(f"drop {table}")
    return "dropped"


@pytest.mark.parametrize("guarded_tool", [True, False])
async def test_run_guarded_honours_needs_approval_where_the_policy_allows(
    guard: Guard, channel: RecordingChannel, guarded_tool: bool,
) -> None:
    tool = function_tool(peek, needs_approval=True)
    tools = guard_function_tools([tool], guard=guard) if guarded_tool else [tool]
    agent = Agent(name="ops", model=CallingModel([("peek", {"path": "/tmp/x"})]), tools=tools)
    result = await run_guarded(agent, "go", guard=guard,
                               context={"agentguard": {"principal": "agent:p"}})
    assert result.final_output == "contents of /tmp/x" and ran == ["peek /tmp/x"]
    # The developer asked for a human: the stricter of the two wins, and it is audited.
    assert [r.call["tool"] for r in channel.asked] == ["peek"]
    types = [e["type"] for e in events(guard)]
    assert types[0] == "challenge.created" and types[-1] == "call.executed"
    assert "needs_approval" in events(guard, "challenge.created")[0]["reason"]


def durable_guard(path: Path, audit: MemoryAuditLog) -> Guard:
    from .conftest import POLICY

    return Guard(Policy.from_yaml(POLICY), store=SQLiteStore(path / "s.db"), audit=audit,
                 channels=[TerminalChannel()])


async def test_interrupting_tools_hold_only_what_needs_a_human(tmp_path: Path) -> None:
    audit = MemoryAuditLog()
    calls = [("peek", {"path": "/a"}), ("drop", {"table": "t"}), ("delete", {"path": "/b"}),
             ("delete", {"path": "/b"}), ("peek", {"path": "/c"})]

    def agent_on(guard: Guard) -> Agent[Any]:
        tools = guard_function_tools(
            [peek, drop, delete, function_tool(peek, name_override="get_peek",
                                               needs_approval=True)],
            guard=guard, hold="interrupt", run={"principal": "agent:d"})
        return Agent(name="ops", model=CallingModel([*calls, ("get_peek", {"path": "/d"})]),
                     tools=tools)

    guard = durable_guard(tmp_path, audit)
    first = await run_durable(agent_on(guard), "go", guard=guard)
    await guard.close()
    # Allowed calls ran at once; the denied one was refused without a pause (audited once);
    # the deletions and the tool whose developer asked for approval are held.
    assert sorted(ran) == ["peek /a", "peek /c"]
    assert [(p.tool, json.loads(p.arguments)) for p in first.pending] == [
        ("delete", {"path": "/b"}), ("delete", {"path": "/b"}), ("get_peek", {"path": "/d"})]
    assert first.pending[0].request_id == first.pending[1].request_id  # duplicates collapse
    assert [e["type"] for e in audit.events].count("call.denied") == 1
    assert "Retry later" in first.pending[0].message
    saved = first.state()

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    for p in (first.pending[0], first.pending[2]):
        await cast_vote(store=store, audit=audit, request_id=p.request_id or "",
                        approver="alice", approve=True, channel="cli")
    await store.close()
    restarted = durable_guard(tmp_path, audit)
    done = await resume_durable(agent_on(restarted), saved, guard=restarted)
    await restarted.close()
    assert done.finished and not done.pending
    # One approval, one run: the duplicate call in the same turn is answered, not run.
    assert sorted(ran[:2]) == ["peek /a", "peek /c"]  # a turn's tools run concurrently
    assert sorted(ran[2:]) == ["delete /b", "peek /d"]
    assert "an identical call in this turn" in done.final_output
    assert [e["type"] for e in audit.events].count("call.executed") == 2


async def test_a_plain_runner_run_never_blocks_on_an_interrupting_tool(tmp_path: Path) -> None:
    guard = durable_guard(tmp_path, MemoryAuditLog())
    tools = guard_function_tools([delete], guard=guard, hold="interrupt")
    agent = Agent(name="ops", model=CallingModel([("delete", {"path": "/b"})]), tools=tools)
    result = await Runner.run(agent, "go")
    assert [i.name for i in result.interruptions] == ["delete"] and ran == []
    # Approving in the SDK alone (an edited saved state, say) runs nothing unapproved.
    state = result.to_state()
    state.approve(state.get_interruptions()[0])
    after = await Runner.run(agent, state)
    assert ran == [] and "waiting for approval" in str(after.final_output)
    await guard.close()


def test_the_example_tells_the_whole_story(tmp_path: Path) -> None:
    out = step(str(EXAMPLE), home=tmp_path)
    assert "denied by bob: hosts is managed by puppet" in out
    assert 'ran: {"tool": "delete_file", "path": "/tmp/build"}' in out


async def test_an_edited_saved_state_cannot_change_the_approved_call(tmp_path: Path) -> None:
    audit = MemoryAuditLog()

    def agent_on(guard: Guard) -> Agent[Any]:
        tools = guard_function_tools([delete], guard=guard, hold="interrupt",
                                     run={"principal": "agent:e"})
        return Agent(name="ops", model=CallingModel([("delete", {"path": "/tmp/ok"})]),
                     tools=tools)

    guard = durable_guard(tmp_path, audit)
    first = await run_durable(agent_on(guard), "go", guard=guard)
    await guard.close()
    (held,) = first.pending
    await cast_vote(store=SQLiteStore(tmp_path / "s.db"), audit=audit,
                    request_id=held.request_id or "", approver="alice", approve=True,
                    channel="cli")
    # Whoever can write the saved state swaps the approved arguments for others.
    edited = first.state().replace("/tmp/ok", "/etc/passwd")
    assert edited != first.state()
    restarted = durable_guard(tmp_path, audit)
    # The SDK notices the call id now names another invocation and refuses to resume.
    with pytest.raises(ModelBehaviorError, match="reused a tool call ID"):
        await resume_durable(agent_on(restarted), edited, guard=restarted)
    assert ran == []
    # The approval still binds the call it was given for, which runs once.
    done = await resume_durable(agent_on(restarted), first.state(), guard=restarted)
    await restarted.close()
    assert done.finished and ran == ["delete /tmp/ok"]


async def test_a_developers_needs_approval_function_is_honoured_when_interrupting(
    tmp_path: Path,
) -> None:
    async def secret_paths(ctx: Any, params: dict[str, Any], call_id: str) -> bool:
        return str(params.get("path", "")).startswith("/secret")

    guard = durable_guard(tmp_path, MemoryAuditLog())
    tools = guard_function_tools(
        [function_tool(peek, name_override="get_peek", needs_approval=secret_paths)],
        guard=guard, hold="interrupt")
    agent = Agent(name="ops", model=CallingModel([("get_peek", {"path": "/pub"}),
                                                  ("get_peek", {"path": "/secret/k"})]),
                  tools=tools)
    run = await run_durable(agent, "go", guard=guard)
    await guard.close()
    # The policy allows both; the developer asked about one: that one waits for a human.
    assert ran == ["peek /pub"]
    assert [json.loads(p.arguments) for p in run.pending] == [{"path": "/secret/k"}]
