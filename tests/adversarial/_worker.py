"""A process that makes one guarded call on a shared SQLite store, for crash tests.

Usage: python _worker.py MODE DB AUDIT MARKER

MODE: ``wait`` (nobody answers here), ``stall`` (approve at once, then hang between the
approval and the execution), ``approve`` / ``deny`` (a scripted human answers). The tool
appends one line to MARKER each time it really runs. Prints ``outcome=... asked=N``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from agentguard import Guard, Policy, ToolCallRefused, guarded
from agentguard.audit import JsonlAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest

POLICY = """
defaults: {timeout: 60s}
groups: {oncall: [alice, bob]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
  privileged: {require: deny}
rules: [{id: restart, match: {tool: restart}, class: destructive}]
"""


class Worker(ScriptedChannel):
    """Answers per MODE; in ``stall`` mode hangs in ``settled`` (after the approval is
    recorded, before the guard consumes it) after leaving a file that says so."""

    def __init__(self, mode: str, marker: Path) -> None:
        answers = {"approve": [ScriptedChannel.vote("alice")], "stall": [
            ScriptedChannel.vote("alice")], "deny": [ScriptedChannel.vote("bob", False)]}
        super().__init__(answers.get(mode, []))
        self.mode = mode
        self.marker = marker
        self.asked = 0

    async def ask(self, request: ApprovalRequest):
        self.asked += 1
        if self.mode == "wait":
            await anyio.sleep_forever()
        async for answer in super().ask(request):
            yield answer
        if self.mode == "wait":  # pragma: no cover
            yield ChannelAnswer(kind="closed", channel=self.name)

    async def settled(self, request: ApprovalRequest) -> None:
        if self.mode == "stall" and request.status == "approved":
            # Write then rename: the test polls for the file and must never read it half-written.
            partial = Path(f"{self.marker}.approved.partial")
            partial.write_text(request.id)
            partial.replace(f"{self.marker}.approved")
            await anyio.sleep_forever()


async def main(mode: str, db: str, audit: str, marker: str) -> None:
    channel = Worker(mode, Path(marker))
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(db), audit=JsonlAuditLog(audit),
                  channels=[channel])

    @guarded(guard=guard)
    async def restart(service: str) -> None:
        with open(marker, "a") as f:
            f.write(f"ran {service}\n")

    async with guard:
        try:
            await restart("api")
            outcome = "approved"
        except ToolCallRefused as exc:
            outcome = f"{exc.kind}: {exc.reason}"
    print(f"outcome={outcome} asked={channel.asked}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
