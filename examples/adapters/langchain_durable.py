"""A held call that outlives its process: a ``create_agent`` run pauses with a LangGraph
interrupt, kept by a SQLite checkpointer; an approver answers from another terminal; a new
process resumes the run from the store's verdicts (runs offline with a scripted chat model).

    python examples/adapters/langchain_durable.py start /tmp/scratch.txt /etc/hosts
    agentguard approvals list   --store sqlite:///.agentguard-durable/state.db
    agentguard approvals approve ID --store sqlite:///.agentguard-durable/state.db --as alice
    agentguard approvals deny ID --reason "keep it" --store ... --as alice
    python examples/adapters/langchain_durable.py resume

``start`` asks the agent to delete the given paths: every deletion needs alice's approval, so
the run pauses (one interrupt per held call, each with its request id) and the process
exits. ``resume`` is a new process: it rebuilds the agent, reads the paused run from the
checkpointer, builds ``Command(resume=...)`` from the verdicts in the store and continues;
approved calls run once, with exactly the approved arguments; denied calls reach the model
as refusals carrying the approver's reason. Calls still waiting pause the run again.

Options: ``--dir DIR`` (state, checkpoints, audit; default ``.agentguard-durable``),
``--thread ID``, ``--style middleware|tools`` (``GuardMiddleware`` or ``guard_tools``) and
``--json`` (print machine-readable lines).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import Field

from agentguard import Guard, Policy
from agentguard.adapters.langchain import (
    GuardMiddleware,
    RunContext,
    guard_tools,
    resume_from_store,
)
from agentguard.channels import TerminalChannel
from agentguard.settings import open_audit_log
from agentguard.store import SQLiteStore

POLICY = """
version: 1
defaults: {unknown_tool: approve, timeout: 1h}
groups: {oncall: [alice, bob]}
classes:
  read:        {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
rules:
  - {id: deletes, match: {tool: delete_file}, class: destructive}
"""

LEDGER = "ran.jsonl"  # what the tool really did, one line per run


def make_tools(workdir: Path) -> list[Any]:
    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        with (workdir / LEDGER).open("a") as out:
            out.write(json.dumps({"tool": "delete_file", "path": path}) + "\n")
        return f"deleted {path}"

    return [delete_file]


class ScriptedChat(GenericFakeChatModel):
    """Stands in for a real chat model: asks to delete the paths it was given, then reports
    what the tools answered (so the refusals it was shown are visible)."""

    paths: list[str] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChat:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            reply = AIMessage(content=" | ".join(f"[{m.status}] {m.content}" for m in results))
        else:
            reply = AIMessage(content="", tool_calls=[
                {"name": "delete_file", "args": {"path": p}, "id": f"call-{i}"}
                for i, p in enumerate(self.paths)])
        self.messages = iter([reply])
        return super()._generate(messages, *args, **kwargs)


def make_agent(workdir: Path, style: str, paths: list[str]) -> tuple[Any, Guard, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'state.db'}"
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(workdir / "state.db"),
                  audit=open_audit_log(workdir / "audit.jsonl"),
                  channels=[TerminalChannel(store_hint=url)])
    # The tool calls of one turn run on worker threads: the connection is shared.
    saver = SqliteSaver(sqlite3.connect(workdir / "checkpoints.db", check_same_thread=False))
    model = ScriptedChat(messages=iter([]), paths=paths)
    tools = make_tools(workdir)
    if style == "tools":
        agent = create_agent(model, guard_tools(tools, guard=guard, hold="interrupt"),
                             checkpointer=saver, context_schema=RunContext)
    else:
        agent = create_agent(model, tools, checkpointer=saver, context_schema=RunContext,
                             middleware=[GuardMiddleware(guard=guard, hold="interrupt")])
    return agent, guard, saver


def report(out: Any, as_json: bool) -> int:
    """Print what the run ended with; 2 when it is paused on held calls."""
    held = [i.value for i in out.interrupts]
    if held:
        for value in held:
            if as_json:
                print(json.dumps({"held": value["request_id"], "name": value["name"],
                                  "args": value["args"]}))
            else:
                print(f"paused: {value['name']}({value['args']}) waits for approval under "
                      f"request {value['request_id']}: {value['reason']}")
        return 2
    answer = out.value["messages"][-1].content
    print(json.dumps({"final": answer}) if as_json else f"model: {answer}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["start", "resume"])
    parser.add_argument("paths", nargs="*", default=["/tmp/scratch.txt", "/etc/hosts"])
    parser.add_argument("--dir", type=Path, default=Path(".agentguard-durable"))
    parser.add_argument("--thread", default="durable-demo")
    parser.add_argument("--style", choices=["middleware", "tools"], default="middleware")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    agent, guard, saver = make_agent(args.dir, args.style, args.paths)
    config = {"configurable": {"thread_id": args.thread}}
    run = RunContext(principal="agent:tidy", acting_for="carol")
    try:
        if args.step == "start":
            out = agent.invoke({"messages": [("user", "Tidy up those files.")]}, config,
                               context=run, version="v2")
            return report(out, args.json)
        paused = agent.get_state(config).interrupts
        if not paused:
            print("the run is not paused: nothing to resume", file=sys.stderr)
            return 0
        command = resume_from_store(paused, guard=guard)
        if command is None:
            print("no verdict yet: resume later", file=sys.stderr)
            return 3
        return report(agent.invoke(command, config, context=run, version="v2"), args.json)
    finally:
        saver.conn.close()


if __name__ == "__main__":
    sys.exit(main())
