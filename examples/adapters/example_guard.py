"""The guard every adapter example uses: one policy, one approver.

The approver is "alice", played by a script that approves deletions under /tmp and refuses
the rest, so the examples run unattended. Pass ``--ask`` to any example to be asked at your
terminal instead.
"""

from __future__ import annotations

import sys

from agentguard import Guard, Policy
from agentguard.channels import ApprovalChannel, ConsoleChannel, ScriptedChannel
from agentguard.types import ApprovalRequest

POLICY = """
version: 1
# Frameworks run the calls of one model turn in parallel: let a few wait for alice at once
# (the default, 1, refuses the second held call of a class at once as an approval flood).
defaults: {unknown_tool: approve, timeout: 2m, pending_per_class: 3}
groups: {oncall: [alice]}
classes:
  read:        {require: allow}
  write:       {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
rules:
  - {id: reads,   match: {tool: [get_weather, list_files]}, class: read}
  - {id: deletes, match: {tool: delete_file}, class: destructive}
  - {id: no-drop, match: {tool: drop_database}, require: deny}
"""


def alice(request: ApprovalRequest) -> list:
    path = str(request.call["args"].get("path", ""))
    ok = path.startswith("/tmp/")
    print(f"  [alice] {request.call['tool']}({path}) -> {'approve' if ok else 'deny'}")
    return [ScriptedChannel.vote("alice", ok, reason="" if ok else "only /tmp may go")]


def make_guard() -> Guard:
    """The example guard (in-memory store and audit log)."""
    channel: ApprovalChannel
    if "--ask" in sys.argv:
        channel = ConsoleChannel(approver="alice")
    else:
        channel = ScriptedChannel(alice, delay=0.05)
    return Guard(Policy.from_yaml(POLICY), channels=[channel])


def print_audit(guard: Guard) -> None:
    """One line per audit record."""
    for event in guard.audit.events:  # type: ignore[attr-defined]
        print(f"  audit: {event['type']:<18} {event.get('tool', ''):<12} "
              f"{event.get('principal', '')}  {event.get('outcome') or ''}")
