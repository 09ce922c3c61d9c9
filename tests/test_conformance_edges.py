"""One policy, same decision everywhere.

Every edge (the decorator, each framework adapter, sync and async where the framework has
both, and the MCP proxy once it is wired in) gets the same policy, the same tools and the
same sequence of calls from the same callers. Each must give the same results (the tool's
output, or the same refusal text), write the same audit records (minus ids, times and the
edge's name), and never run a refused tool. The edges themselves are in
``tests/adapters/edges.py`` (the MCP proxy's hook is ``mcp_proxy_edge`` there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from agentguard import Guard, Policy
from agentguard.adapters import RunContext
from agentguard.audit import MemoryAuditLog
from agentguard.audit.redact import Redactor
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.reauth.base import ReauthResult
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest

from .adapters.edges import EDGES, Result

pytestmark = pytest.mark.anyio

POLICY = """
version: 1
defaults: {unknown_tool: approve, timeout: 30s, deny_cooldown: 1m}
groups: {oncall: [alice, bob]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
  privileged: {require: approve, approvers: [group:oncall]}
signals:
  off_ci: {outside_cidr: [10.20.0.0/16]}
rules:
  - {id: reads, match: {tool: get_user}, class: read}
  - {id: ops-reports, match: {tool: get_report, principal: {claims: {team: ops}}}, class: read}
  - {id: no-drops, match: {tool: drop}, require: deny}
  - {id: deletes, match: {tool: delete}, class: destructive, separation_of_duties: true}
  - id: prod-deploy
    match: {tool: deploy, args: {env: production}}
    class: write
    approvers: [group:oncall]
    step_up: [{when: off_ci, require: approve}]
  - id: secrets
    match: {tool: read_secret}
    class: write
    require: reauth
    reauth: {method: totp, max_age: 0}
"""

AGENT = RunContext(principal="agent:ops", claims={"team": "ops"}, session_id="s1",
                   source_ip="10.20.1.5", acting_for="user:carol")
OFF_CI = RunContext(principal="agent:ops", claims={"team": "ops"}, session_id="s1",
                    source_ip="203.0.113.9", acting_for="user:carol")
DEV = RunContext(principal="agent:dev", claims={"team": "dev"}, session_id="s2")
FOR_ALICE = RunContext(principal="agent:ops", session_id="s1", acting_for="alice")
FOR_MALLORY = RunContext(principal="agent:ops", session_id="s1", acting_for="user:mallory")

#: (tool, arguments as the model sends them, who calls, what should happen)
CALLS: list[tuple[str, dict[str, Any], RunContext, str]] = [
    ("get_user", {"user_id": 7}, AGENT, "ran"),
    ("drop", {"table": "users"}, AGENT, "denied by policy"),
    ("delete", {"path": "/tmp/a"}, AGENT, "approved by alice"),
    ("delete", {"path": "/etc", "recursive": True}, AGENT, "denied by alice"),
    ("delete", {"path": "/etc", "recursive": True}, AGENT, "cooldown"),
    ("delete", {"path": "/tmp/b"}, FOR_ALICE, "alice may not approve; bob does"),
    ("delete", {"path": "/home/x", "recursive": True}, AGENT, "alice edits it to /tmp/x"),
    ("deploy", {"env": "production"}, AGENT, "ran: on the CI network"),
    ("deploy", {"env": "production"}, OFF_CI, "approved by bob"),
    ("rotate_key", {"name": "k1"}, AGENT, "unreachable"),
    ("read_secret", {"name": "db"}, AGENT, "re-authenticated"),
    ("read_secret", {"name": "db"}, FOR_MALLORY, "re-authentication failed"),
    ("get_report", {}, AGENT, "ran: ops may"),
    ("get_report", {"period": "weekly"}, DEV, "unknown for dev, denied by alice"),
]

EXPECTED_RAN = ["get_user", "delete", "delete", "delete", "deploy", "deploy", "read_secret",
                "get_report"]
VOLATILE = {"call_id", "new_call_id", "request_id", "grant_id", "at", "hash", "prev_hash",
            "waited_ms", "expires_at", "origin"}
REDACTION_KEY = b"conformance-suite-key-0123456789"


def script(request: ApprovalRequest) -> list[ChannelAnswer]:
    tool, args = request.call["tool"], request.call["args"]
    vote = ScriptedChannel.vote
    if tool == "rotate_key":
        return [ChannelAnswer(kind="unreachable", channel="scripted", reason="pager is down")]
    if tool == "delete" and args["path"].startswith("/home"):
        # Narrow it instead of approving: the edited call is decided (and run) instead.
        return [ChannelAnswer(kind="vote", channel="scripted", approver="alice", approve=False,
                              edited_args={"path": "/tmp/x"})]
    if tool == "delete" and args["path"].startswith("/tmp"):
        if request.call["context"]["acting_for"] == "alice":
            return [vote("alice"), vote("bob")]
        return [vote("alice")]
    if tool == "deploy":
        return [vote("bob")]
    return [vote("alice", False, reason=f"no {tool} today")]


class ScriptedReauth:
    """Re-authentication that succeeds for the people listed (a real Reauthenticator)."""

    method = "totp"

    def __init__(self, can_prove: set[str]) -> None:
        self.can_prove = can_prove

    async def reauthenticate(self, subject: str, request: ApprovalRequest) -> ReauthResult:
        kind = "verified" if subject in self.can_prove else "failed"
        return ReauthResult(kind, subject, "totp", "scripted")


def make_guard() -> Guard:
    return Guard(Policy.from_yaml(POLICY), store=MemoryStore(),
                 audit=MemoryAuditLog(redactor=Redactor(REDACTION_KEY)),
                 channels=[ScriptedChannel(script)],
                 reauthenticators={"totp": ScriptedReauth({"user:carol"})})


def make_tools(ran: list[str]) -> dict[str, Callable[..., str]]:
    """The tools, as plain functions that record each run."""

    def get_user(user_id: int) -> str:
        """Look a user up."""
        ran.append("get_user")
        return f"user {user_id}"

    def drop(table: str) -> str:
        """Drop a table."""
        ran.append("drop")
        return f"dropped {table}"

    def delete(path: str, recursive: bool = False) -> str:
        """Delete a path."""
        ran.append("delete")
        return f"deleted {path}{' recursively' if recursive else ''}"

    def deploy(env: str) -> str:
        """Deploy."""
        ran.append("deploy")
        return f"deployed to {env}"

    def rotate_key(name: str) -> str:
        """Rotate a key."""
        ran.append("rotate_key")
        return f"rotated {name}"

    def read_secret(name: str) -> str:
        """Read a secret."""
        ran.append("read_secret")
        return f"secret {name}"

    def get_report(period: str = "daily") -> str:
        """A report."""
        ran.append("get_report")
        return f"{period} report"

    return {f.__name__: f for f in (get_user, drop, delete, deploy, rotate_key, read_secret,
                                    get_report)}


class SuiteSetup:
    """The guard and tools every edge is built from (see ``edges.Setup``)."""

    make_guard = staticmethod(make_guard)
    make_tools = staticmethod(make_tools)


@dataclass
class Transcript:
    results: list[Result]
    audit: list[dict[str, Any]]
    ran: list[str]
    origins: set[str]


async def play(edge_name: str) -> Transcript:
    factory, sync, _ = EDGES[edge_name]
    edge = await factory(sync, SuiteSetup())
    try:
        results = [await edge.call(tool, dict(args), run) for tool, args, run, _ in CALLS]
    finally:
        for close in edge.closers:
            await close()
    events = edge.guard.audit.events  # type: ignore[attr-defined]
    audit = [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]
    origins = {e["origin"] for e in events if "origin" in e}
    return Transcript(results, audit, list(edge.ran), origins)


@pytest.fixture(scope="module")
def reference() -> Transcript:
    return anyio.run(play, "decorator-async")


def test_reference_behaves_as_the_policy_says(reference: Transcript) -> None:
    """The decorator's transcript is the reference: check it says what the policy means,
    so the comparisons below cannot pass on a reference that is itself wrong."""
    ok = [r[0] for r in reference.results]
    assert ok == [e.startswith(("ran", "approved", "alice may", "alice edits",
                                "re-authenticated"))
                  for *_, e in CALLS]
    assert reference.ran == EXPECTED_RAN
    texts = [r[1] for r in reference.results]
    assert "by rule 'no-drops'" in texts[1] and "Nothing ran" in texts[1]
    assert texts[2] == "deleted /tmp/a" and "denied by alice: no delete today" in texts[3]
    assert "an identical call was just denied" in texts[4]
    assert texts[6] == "deleted /tmp/x"  # the edited call ran, not the one asked for
    assert "(unreachable" in texts[9] and "(re-authentication failed)" in texts[11]
    assert texts[12] == "daily report" and "denied by alice" in texts[13]
    types = [e["type"] for e in reference.audit]
    assert types.count("vote.rejected") == 1  # alice may not approve what she asked for
    assert {e["source_ip"] for e in reference.audit if e.get("tool") == "deploy"} == {
        "203.0.113.9"}
    executed = [e for e in reference.audit if e["type"] == "call.executed"]
    assert [e["tool"] for e in executed] == ["delete", "delete", "delete", "deploy",
                                             "read_secret"]
    assert executed[0]["args"] == {"path": "/tmp/a", "recursive": False}
    assert executed[2]["args"] == {"path": "/tmp/x"}
    assert types.count("challenge.edited") == 1
    assert all(e["principal"] == "agent:ops" for e in executed)


@pytest.mark.parametrize("edge_name", [n for n in EDGES if n != "decorator-async"])
async def test_edge_matches_the_decorator(edge_name: str, reference: Transcript) -> None:
    got = await play(edge_name)
    for (tool, args, run, expect), want, have in zip(CALLS, reference.results, got.results,
                                                     strict=True):
        assert have == want, f"{edge_name}: {tool}({args}) as {run.principal}: {expect}"
    assert got.ran == reference.ran, f"{edge_name} ran a different set of tools"
    assert got.audit == reference.audit
    assert got.origins == {EDGES[edge_name][2]}
