"""Dispatcher turns whose held calls outlive the process (Anthropic Messages with the real
client against the scripted model server; OpenAI Chat Completions tool calls): the turn ends
with held calls pending, the conversation is saved, an approver decides with the CLI from
another process, and a new process produces the tool results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard import Guard, Policy
from agentguard.adapters.anthropic import ToolDispatcher as AnthropicTools
from agentguard.adapters.openai import ToolDispatcher as OpenAITools
from agentguard.adapters.openai import ToolOutcome
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.channels import TerminalChannel
from agentguard.store import SQLiteStore

from .conftest import EXAMPLES, POLICY

pytestmark = pytest.mark.anyio

EXAMPLE = EXAMPLES / "anthropic_durable.py"
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


def held(out: str) -> list[str]:
    return [line.rsplit(" request ", 1)[1] for line in out.splitlines() if "held: " in line]


def ran_in(home: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (home / "ran.jsonl").read_text().splitlines()]


def test_an_anthropic_turn_outlives_the_process_one_approved_one_denied(
    tmp_path: Path,
) -> None:
    first = held(step(str(EXAMPLE), "start", str(tmp_path), home=tmp_path))
    assert len(set(first)) == 2  # /tmp/build, then /etc/hosts: each held on its own
    assert ran_in(tmp_path) == [{"tool": "list_files", "path": "/tmp"}]
    # Resumed before anyone decided: still pending, and the read is not run again.
    assert held(step(str(EXAMPLE), "resume", str(tmp_path), home=tmp_path)) == first
    assert ran_in(tmp_path) == [{"tool": "list_files", "path": "/tmp"}]

    opts = ["--store", f"sqlite:///{tmp_path / 'agentguard.db'}",
            "--audit", str(tmp_path / "audit.jsonl")]
    cli = ["-m", "agentguard.cli", "approvals"]
    step(*cli, "approve", first[0], "--as", "alice", *opts, home=tmp_path)
    step(*cli, "deny", first[1], "--as", "bob", "--reason", "hosts is managed \x1b[31mby puppet",
         *opts, home=tmp_path)

    out = step(str(EXAMPLE), "resume", str(tmp_path), home=tmp_path)
    assert 'finished: the tools said: ["build", "notes.txt"] | deleted /tmp/build | ' in out
    assert "denied by bob: hosts is managed \\x1b[31mby puppet" in out and "\x1b" not in out
    assert ran_in(tmp_path) == [{"tool": "list_files", "path": "/tmp"},
                                {"tool": "delete_file", "path": "/tmp/build"}]
    assert not (tmp_path / "conversation.json").exists()


def delete(path: str) -> str:
    """Delete a file."""
    ran.append(f"delete {path}")
    return f"deleted {path}"


def guard_on(path: Path, audit: MemoryAuditLog) -> Guard:
    return Guard(Policy.from_yaml(POLICY), store=SQLiteStore(path / "s.db"), audit=audit,
                 channels=[TerminalChannel()])


def chat_calls(*paths: str) -> list[dict[str, object]]:
    return [{"id": f"c{n}", "type": "function",
             "function": {"name": "delete", "arguments": json.dumps({"path": p})}}
            for n, p in enumerate(paths)]


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_a_chat_turn_held_then_settled_duplicates_collapse(
    tmp_path: Path, mode: str,
) -> None:
    audit = MemoryAuditLog()
    calls = chat_calls("/tmp/a", "/tmp/a", "/tmp/b")
    run = {"principal": "agent:chat"}

    async def turn(settled: list[ToolOutcome]) -> list[ToolOutcome]:
        guard = guard_on(tmp_path, audit)  # a fresh guard each time: a restarted process
        tools = OpenAITools([delete], guard=guard, run=run)
        try:
            if mode == "sync":
                import anyio

                return await anyio.to_thread.run_sync(
                    lambda: tools.turn_sync([(c["id"], "delete", c["function"]["arguments"])
                                             for c in calls], wait=0, settled=settled))
            return await tools.chat_outcomes(calls, wait=0, settled=settled)
        finally:
            await guard.close()

    held = await turn([])
    assert [o.pending for o in held] == [True, True, True] and ran == []
    assert held[0].request_id == held[1].request_id != held[2].request_id
    assert not any(o.refused for o in held)
    assert "Retry later" in held[0].output
    kept = [ToolOutcome.from_dict(json.loads(json.dumps(o.to_dict()))) for o in held]

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await cast_vote(store=store, audit=audit, request_id=held[0].request_id or "",
                    approver="alice", approve=True, channel="cli")
    await store.close()
    settled = await turn(kept)
    assert [o.pending for o in settled] == [False, False, True]
    assert ran == ["delete /tmp/a"]  # approved once, run once; the duplicate did not run
    assert settled[0].output == "deleted /tmp/a" and settled[0].ran
    assert "an identical call in this turn (c0)" in settled[1].output
    assert settled[2].request_id == held[2].request_id

    # Settled outcomes are kept, not re-run; the still-pending call is asked again.
    again = await turn(settled)
    assert ran == ["delete /tmp/a"] and again[2].pending
    messages = OpenAITools.chat_messages(again)
    assert [m["tool_call_id"] for m in messages] == ["c0", "c1", "c2"]
    assert [e["type"] for e in audit.events].count("call.executed") == 1


async def test_anthropic_reply_from_marks_pending_results_as_errors(tmp_path: Path) -> None:
    guard = guard_on(tmp_path, MemoryAuditLog())
    tools = AnthropicTools([delete], guard=guard)
    blocks = [{"type": "tool_use", "id": "t1", "name": "delete", "input": {"path": "/x"}}]
    outcomes = await tools.outcomes(blocks, wait=0)
    reply = AnthropicTools.reply_from(outcomes)
    (block,) = reply["content"]
    assert block["tool_use_id"] == "t1" and block["is_error"] is True
    assert "waiting for approval" in block["content"] and ran == []
    await guard.close()


async def test_a_runner_tool_that_does_not_wait_answers_held_then_runs_once(
    tmp_path: Path,
) -> None:
    from anthropic import AsyncAnthropic, beta_async_tool

    from agentguard.adapters.anthropic import guard_beta_tools

    from .conftest import scripted_llm

    async def adelete(path: str) -> str:
        """Delete a file (async)."""
        ran.append(f"adelete {path}")
        return f"deleted {path}"

    audit = MemoryAuditLog()

    async def conversation() -> dict[str, object]:
        guard = guard_on(tmp_path, audit)
        replies = [scripted_llm.anthropic_tool_uses(("adelete", {"path": "/srv/x"})),
                   scripted_llm.anthropic_text("done")]
        with scripted_llm.ScriptedLLM(replies) as llm:
            client = AsyncAnthropic(base_url=llm.url, api_key="offline", max_retries=0)
            runner = client.beta.messages.tool_runner(
                model="m", max_tokens=64, messages=[{"role": "user", "content": "go"}],
                tools=guard_beta_tools([beta_async_tool(adelete)], guard=guard, wait=0,
                                       run={"principal": "agent:runner"}))
            await runner.until_done()
            (result,) = [b for b in llm.requests[1][1]["messages"][-1]["content"]
                         if b.get("type") == "tool_result"]
        await guard.close()
        return result

    held = await conversation()
    assert held["is_error"] is True and "Retry later" in str(held["content"]) and ran == []
    request_id = next(e["request_id"] for e in audit.events if e["type"] == "challenge.created")
    assert request_id in str(held["content"])
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await cast_vote(store=store, audit=audit, request_id=request_id, approver="bob",
                    approve=True, channel="cli")
    await store.close()
    done = await conversation()  # the model makes the same call again, later
    assert done["content"] == "deleted /srv/x" and ran == ["adelete /srv/x"]


async def test_identical_calls_the_policy_allows_each_run(tmp_path: Path) -> None:
    def get_tick(n: int) -> str:
        """Advance a counter (the policy allows it)."""
        ran.append(f"tick {n}")
        return "ticked"

    guard = guard_on(tmp_path, MemoryAuditLog())
    tools = OpenAITools([get_tick], guard=guard)
    calls = [{"id": f"t{i}", "function": {"name": "get_tick", "arguments": '{"n": 1}'}}
             for i in range(2)]
    outcomes = await tools.chat_outcomes(calls, wait=0)
    assert [o.output for o in outcomes] == ["ticked", "ticked"] and ran == ["tick 1", "tick 1"]
    await guard.close()


def test_the_example_tells_the_whole_story(tmp_path: Path) -> None:
    out = step(str(EXAMPLE), home=tmp_path)
    assert "denied by bob: hosts is managed by puppet" in out
    assert '{"tool": "delete_file", "path": "/tmp/build"}' in out


async def test_a_changed_call_in_a_saved_turn_needs_its_own_approval(tmp_path: Path) -> None:
    audit = MemoryAuditLog()
    guard = guard_on(tmp_path, audit)
    tools = OpenAITools([delete], guard=guard, run={"principal": "agent:chat"})
    (held,) = await tools.chat_outcomes(chat_calls("/tmp/ok"), wait=0)
    await cast_vote(store=guard.store, audit=audit, request_id=held.request_id or "",
                    approver="alice", approve=True, channel="cli")
    # The saved conversation is edited: same call id, other arguments.
    (changed,) = await tools.chat_outcomes(chat_calls("/etc/passwd"), wait=0,
                                           settled=[held])
    assert changed.pending and changed.request_id != held.request_id and ran == []
    (approved,) = await tools.chat_outcomes(chat_calls("/tmp/ok"), wait=0, settled=[held])
    assert approved.ran and ran == ["delete /tmp/ok"]
    await guard.close()
