"""A held Anthropic tool call that outlives its process (runs offline).

One model turn asks for a read and two deletions. The read runs; the deletions are held and
the turn ends with them marked pending: the conversation and the outcomes so far are saved
to a file and the process exits. An approver decides from another process
(``agentguard approvals approve|deny ID``), and a third process resumes the turn: the
approved call runs once with exactly the approved arguments, the read is not run again, and
the model reads the denial's reason in its ``tool_result``.

    python examples/adapters/anthropic_durable.py          # the whole story, in a temp dir
    python examples/adapters/anthropic_durable.py start DIR   # one step each
    python examples/adapters/anthropic_durable.py resume DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from anthropic import AsyncAnthropic
from scripted_llm import ScriptedLLM, anthropic_text, anthropic_tool_uses

from agentguard import Guard, Policy
from agentguard.adapters.anthropic import RunContext, ToolDispatcher, ToolOutcome
from agentguard.channels import TerminalChannel
from agentguard.settings import open_audit_log
from agentguard.store import SQLiteStore

POLICY = """
version: 1
defaults: {unknown_tool: approve, timeout: 8h}
groups: {oncall: [alice, bob]}
classes:
  read:        {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
rules:
  - {id: reads,   match: {tool: list_files}, class: read}
  - {id: deletes, match: {tool: delete_file}, class: destructive}
"""


def model(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for Claude: asks for three tools, then reports what they said. It reads
    only the request, so any process can play it at any point of the conversation."""
    last = body["messages"][-1]["content"]
    results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not results:
        return anthropic_tool_uses(("list_files", {"path": "/tmp"}),
                                   ("delete_file", {"path": "/tmp/build"}),
                                   ("delete_file", {"path": "/etc/hosts"}))
    return anthropic_text("the tools said: " + " | ".join(str(r["content"]) for r in results))


def make_tools(home: Path) -> tuple[ToolDispatcher, Guard]:
    """The same tools and guard in every process: the store and audit log are files."""
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(home / "agentguard.db"),
                  audit=open_audit_log(home / "audit.jsonl"),
                  channels=[TerminalChannel(store_hint=f"sqlite:///{home / 'agentguard.db'}")])

    def record(tool: str, path: str) -> None:
        with (home / "ran.jsonl").open("a") as ran:  # what really ran, for the story
            ran.write(json.dumps({"tool": tool, "path": path}) + "\n")

    def list_files(path: str) -> list[str]:
        """List a directory."""
        record("list_files", path)
        return ["build", "notes.txt"]

    def delete_file(path: str) -> str:
        """Delete a file."""
        record("delete_file", path)
        return f"deleted {path}"

    tools = ToolDispatcher([list_files, delete_file], guard=guard,
                           run=RunContext(principal="agent:claude", acting_for="carol"))
    return tools, guard


async def answer(tools: ToolDispatcher, home: Path, messages: list[Any],
                 settled: list[ToolOutcome]) -> None:
    """Answer the last assistant turn's tool calls: finish the conversation, or save it with
    the calls still held."""
    outcomes = await tools.outcomes(messages[-1]["content"], wait=0, settled=settled)
    saved = home / "conversation.json"
    if any(o.pending for o in outcomes):
        saved.write_text(json.dumps({"messages": messages,
                                     "outcomes": [o.to_dict() for o in outcomes]}))
        for o in outcomes:
            if o.pending:
                print(f"  held: {o.name} request {o.request_id}")
        print("  conversation saved; this process can exit")
        return
    messages.append(tools.reply_from(outcomes))
    with ScriptedLLM(model) as llm:
        client = AsyncAnthropic(base_url=llm.url, api_key="offline", max_retries=0)
        final = await client.messages.create(model="claude-sonnet-5-5", max_tokens=1024,
                                             messages=messages, tools=tools.tools())
    print(f"  finished: {final.content[0].text}")  # type: ignore[union-attr]
    saved.unlink(missing_ok=True)


async def start(home: Path) -> None:
    tools, guard = make_tools(home)
    messages: list[Any] = [{"role": "user", "content": "Tidy up /tmp and the hosts file"}]
    async with guard:
        with ScriptedLLM(model) as llm:
            client = AsyncAnthropic(base_url=llm.url, api_key="offline", max_retries=0)
            msg = await client.messages.create(model="claude-sonnet-5-5", max_tokens=1024,
                                               messages=messages, tools=tools.tools())
        messages.append({"role": "assistant",
                         "content": [b.model_dump(exclude_none=True) for b in msg.content]})
        await answer(tools, home, messages, [])


async def resume(home: Path) -> None:
    tools, guard = make_tools(home)
    saved = json.loads((home / "conversation.json").read_text())
    async with guard:
        await answer(tools, home, saved["messages"],
                     [ToolOutcome.from_dict(o) for o in saved["outcomes"]])


def step(*args: str, home: Path) -> str:
    """Run one step in its own process, as a real deployment would."""
    env = dict(os.environ, AGENTGUARD_HOME=str(home))
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    print(proc.stdout, end="")
    return proc.stdout


def story() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print("1. the model asks for three tools: the read runs, both deletions are held")
        out = step(__file__, "start", str(home), home=home)
        held = [line.rsplit(" request ", 1)[1] for line in out.splitlines() if "held: " in line]
        store = ["--store", f"sqlite:///{home / 'agentguard.db'}",
                 "--audit", str(home / "audit.jsonl")]
        print("2. an approver, in another process, approves one and denies the other")
        step("-m", "agentguard.cli", "approvals", "approve", held[0], "--as", "alice", *store,
             home=home)
        step("-m", "agentguard.cli", "approvals", "deny", held[1], "--as", "bob",
             "--reason", "hosts is managed by puppet", *store, home=home)
        print("3. a new process resumes the saved turn")
        step(__file__, "resume", str(home), home=home)
        print(f"   ran: {(home / 'ran.jsonl').read_text().strip()}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("start", "resume"):
        anyio.run({"start": start, "resume": resume}[sys.argv[1]], Path(sys.argv[2]))
    else:
        story()
