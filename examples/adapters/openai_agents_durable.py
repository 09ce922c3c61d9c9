"""A held Agents SDK call that outlives its process (runs offline).

The agent's turn makes two sensitive calls. Each is held as one of the run's approval
interruptions; the run's state is saved to a file and the process exits. Later, an approver
decides from another process (``agentguard approvals approve|deny ID``), and a third process
resumes the saved run: the approved call runs once, with exactly the approved arguments, and
the model reads the denial's reason.

    python examples/adapters/openai_agents_durable.py          # the whole story, in a temp dir
    python examples/adapters/openai_agents_durable.py start DIR   # one step each
    python examples/adapters/openai_agents_durable.py resume DIR
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
from agents import Agent, Model, ModelResponse, Usage, function_tool, set_tracing_disabled
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from agentguard import Guard, Policy
from agentguard.adapters.openai import DurableRun, guard_function_tools, resume_durable, run_durable
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

#: Who is calling: a mapping context travels inside the saved run state.
CONTEXT = {"agentguard": {"principal": "agent:ops", "acting_for": "carol"}}


class ScriptedModel(Model):
    """A stand-in for the LLM: asks for two deletions, then reports what the tools said.

    It reads only its input, so any process can play it at any point of the run.
    """

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        items = input if isinstance(input, list) else []
        outputs = [i for i in items
                   if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if not outputs:
            out: list[Any] = [
                ResponseFunctionToolCall(type="function_call", call_id=f"call_{n}",
                                         name="delete_file", id=f"fc_{n}", status="completed",
                                         arguments=json.dumps({"path": path}))
                for n, path in enumerate(["/tmp/build", "/etc/hosts"])]
        else:
            said = " | ".join(str(o["output"]) for o in outputs)
            out = [ResponseOutputMessage(
                id="msg_1", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", annotations=[],
                                            text=f"the tools said: {said}")])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("this scripted model does not stream")


def make_agent(home: Path) -> tuple[Agent[Any], Guard]:
    """The same agent and guard in every process: the store and audit log are files."""
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(home / "agentguard.db"),
                  audit=open_audit_log(home / "audit.jsonl"),
                  channels=[TerminalChannel(store_hint=f"sqlite:///{home / 'agentguard.db'}")])

    def delete_file(path: str) -> str:
        """Delete a file."""
        with (home / "ran.jsonl").open("a") as ran:  # what really ran, for the story
            ran.write(json.dumps({"tool": "delete_file", "path": path}) + "\n")
        return f"deleted {path}"

    tools = guard_function_tools([function_tool(delete_file)], guard=guard, hold="interrupt")
    return Agent(name="ops", instructions="Keep the machine tidy.", model=ScriptedModel(),
                 tools=tools), guard


def report(run: DurableRun, home: Path) -> None:
    if run.finished:
        print(f"  finished: {run.final_output}")
        (home / "state.json").unlink(missing_ok=True)
        return
    (home / "state.json").write_text(run.state())
    for call in run.pending:
        print(f"  held: {call.tool}({call.arguments}) request {call.request_id}")
    print("  run state saved; this process can exit")


async def start(home: Path) -> None:
    agent, guard = make_agent(home)
    async with guard:
        report(await run_durable(agent, "Clean up", guard=guard, context=CONTEXT), home)


async def resume(home: Path) -> None:
    agent, guard = make_agent(home)
    async with guard:
        report(await resume_durable(agent, (home / "state.json").read_text(), guard=guard),
               home)


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
        print("1. the agent runs; both deletions are held, the process exits")
        out = step(__file__, "start", str(home), home=home)
        held = dict(line.split("held: ", 1)[1].rsplit(" request ", 1)[::-1]
                    for line in out.splitlines() if "held: " in line)
        by_path = {json.loads(call.split("(", 1)[1][:-1])["path"]: rid
                   for rid, call in held.items()}
        store = ["--store", f"sqlite:///{home / 'agentguard.db'}",
                 "--audit", str(home / "audit.jsonl")]
        print("2. an approver, in another process, approves one and denies the other")
        step("-m", "agentguard.cli", "approvals", "approve", by_path["/tmp/build"],
             "--as", "alice", *store, home=home)
        step("-m", "agentguard.cli", "approvals", "deny", by_path["/etc/hosts"], "--as", "bob",
             "--reason", "hosts is managed by puppet", *store, home=home)
        print("3. a new process resumes the saved run")
        step(__file__, "resume", str(home), home=home)
        print(f"   ran: {(home / 'ran.jsonl').read_text().strip()}")


if __name__ == "__main__":
    set_tracing_disabled(True)  # traces would go to the internet
    if len(sys.argv) == 3 and sys.argv[1] in ("start", "resume"):
        anyio.run({"start": start, "resume": resume}[sys.argv[1]], Path(sys.argv[2]))
    else:
        story()
