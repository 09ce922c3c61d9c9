"""Issue 13's attacks, played on every edge: one policy, the same decision everywhere.

Each test below plays the same calls through every edge of the conformance suite (the
decorator, each framework adapter sync and async, in-process MCP and the MCP proxy; see
``tests/adapters/edges.py``) and checks what must hold whatever the framework does with
arguments:

- arguments mutated by the caller while a human reads the held call change nothing: what
  runs is the approved snapshot, and ``call.executed`` carries it, under the approved hash;
- a coerced boolean (``"true"``, ``1``, ``"yes"``) or an object sent as JSON text never walks
  round the rule written for the value: an edge that takes a model's JSON refuses it as
  ``invalid``; one that takes a Python caller's values (:data:`PYTHON_MODE`) decides the value
  its tool would get; nothing runs unasked;
- an "approve for 1h" grant covers the same rule, caller and human only: never a call another
  rule decides, another principal's or another human's;
- one person is one vote whatever the spelling of their name (``carol``, ``user:carol``).

(The disguised paths and the numbers that are not numbers are in
``test_conformance_edges.py``, beside the suite.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agentguard import Guard, Policy
from agentguard.adapters import RunContext
from agentguard.audit import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest

from .adapters.edges import EDGES, PARTIAL, EdgeRun

pytestmark = pytest.mark.anyio

POLICY = """
version: 1
defaults: {unknown_tool: deny, timeout: 30s}
groups: {oncall: [alice, bob], security: [carol, dave, erin]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
  privileged: {require: approve, approvers: [group:oncall]}
rules:
  - {id: purges, match: {tool: purge}, class: destructive}
  - {id: forced, match: {tool: apply, args: {force: true}}, require: deny}
  - {id: prod-change, match: {tool: apply, args: {change.env: production}}, require: deny}
  - {id: applies, match: {tool: apply}, class: write}
  - id: staging-deploy
    match: {tool: deploy, args: {env: staging}}
    class: privileged
    max_grant: 1h
  - id: prod-deploy
    match: {tool: deploy, args: {env: production}}
    class: privileged
    approvers: [group:security]
    quorum: 2
    separation_of_duties: true
    max_grant: 0s
  - id: root-rotation
    match: {tool: rotate_root}
    class: privileged
    approvers: [group:security]
    quorum: 2
"""

AGENT = RunContext(principal="agent:ops", source_ip="10.20.1.5", acting_for="user:carol")
OTHER_AGENT = RunContext(principal="agent:dev", source_ip="10.20.1.5", acting_for="user:carol")
FOR_DAVE = RunContext(principal="agent:ops", source_ip="10.20.1.5", acting_for="user:dave")

#: The caller's own argument objects. The held purge's approver mutates them while reading.
CALLER_ARGS: list[dict[str, Any]] = []


def script(request: ApprovalRequest) -> list[ChannelAnswer]:
    tool, args = request.call["tool"], request.call["args"]
    vote = ScriptedChannel.vote
    if tool == "purge":
        # Another thread of the agent changes what the human is reading, then the human
        # approves what they read.
        for caller_args in CALLER_ARGS:
            caller_args["paths"][0] = "/"
            caller_args["options"]["recursive"] = True
        return [vote("alice")]
    context = request.call["context"]
    if (tool == "deploy" and args["env"] == "staging" and request.call["principal"] == "agent:ops"
            and context.get("acting_for") in (None, "user:carol")):
        return [vote("alice", grant_ttl=3600)]
    if tool == "rotate_root" and args["name"] == "spelled-twice":
        return [vote("carol"), vote("user:carol"),
                ChannelAnswer(kind="unreachable", channel="scripted", reason="no one else")]
    if tool == "rotate_root":
        return [vote("carol"), vote("dave")]
    # Whoever may answer says no (an approver outside the rule's set is rejected, not waited
    # for).
    return [vote("bob", False, reason=f"not {tool} like this"),
            vote("erin", False, reason=f"not {tool} like this")]


def make_tools(ran: list[str]) -> dict[str, Callable[..., str]]:
    """The attack suite's tools (module level: the proxy's upstream child imports it)."""

    def purge(paths: list[str], options: dict[str, bool]) -> str:
        """Purge paths."""
        ran.append("purge")
        return f"purged {paths} with {options}"

    def apply(change: dict[str, str], force: bool = False) -> str:
        """Apply a change."""
        ran.append("apply")
        return f"applied {change}{' by force' if force else ''}"

    def deploy(env: str) -> str:
        """Deploy."""
        ran.append("deploy")
        return f"deployed to {env}"

    def rotate_root(name: str) -> str:
        """Rotate a root key."""
        ran.append("rotate_root")
        return f"rotated {name}"

    return {f.__name__: f for f in (purge, apply, deploy, rotate_root)}


@dataclass
class AttackSetup:
    make_tools = staticmethod(make_tools)

    def make_guard(self) -> Guard:
        return Guard(Policy.from_yaml(POLICY), store=MemoryStore(), audit=MemoryAuditLog(),
                     channels=[ScriptedChannel(script)])


@dataclass
class Played:
    results: list[tuple[bool, str]]
    records: list[list[dict[str, Any]]]
    ran: list[list[str]]


async def play(edge_name: str, calls: list[tuple[str, dict[str, Any], RunContext]]) -> Played:
    """Make ``calls`` through one edge, each with the very argument object given (no copy)."""
    factory, sync, _ = EDGES[edge_name]
    keep = PARTIAL.get(edge_name, lambda run: run)
    edge: EdgeRun = await factory(sync, AttackSetup())
    log = edge.guard.audit
    played = Played([], [], [])
    try:
        for tool, args, run in calls:
            seen, done = len(log.events), len(edge.ran)  # type: ignore[attr-defined]
            try:
                played.results.append(await edge.call(tool, args, keep(run)))
            except Exception as exc:  # a framework that validates first raises its own error
                assert "valid" in str(exc), exc
                played.results.append((False, str(exc)))
            played.records.append(list(log.events[seen:]))  # type: ignore[attr-defined]
            played.ran.append(list(edge.ran[done:]))
    finally:
        for close in edge.closers:
            await close()
    return played


def types(records: list[dict[str, Any]]) -> list[str]:
    return [r["type"] for r in records]


@pytest.mark.parametrize("edge_name", list(EDGES))
async def test_arguments_mutated_during_the_hold_change_nothing(edge_name: str) -> None:
    args = {"paths": ["/tmp/a"], "options": {"recursive": False}}
    CALLER_ARGS[:] = [args]
    try:
        played = await play(edge_name, [("purge", args, AGENT)])
    finally:
        CALLER_ARGS.clear()
    assert args["paths"] == ["/"]  # the attack happened
    (result,), (records,) = played.results, played.records
    assert played.ran == [["purge"]]
    assert result == (True, "purged ['/tmp/a'] with {'recursive': False}")
    (held,) = [r for r in records if r["type"] == "challenge.created"]
    (executed,) = [r for r in records if r["type"] == "call.executed"]
    assert executed["args"] == {"paths": ["/tmp/a"], "options": {"recursive": False}}
    assert executed["call_hash"] == held["call_hash"]


#: (arguments as a model or a caller sends them, the rule written for the value they mean)
COERCED: list[tuple[dict[str, Any], str]] = [
    ({"change": {"env": "staging"}, "force": "true"}, "forced"),
    ({"change": {"env": "staging"}, "force": 1}, "forced"),
    ({"change": {"env": "staging"}, "force": "yes"}, "forced"),
    ({"change": '{"env": "production"}'}, "prod-change"),
]


#: Edges that validate what a *Python caller* passes (pydantic's lax Python mode: ``"true"``
#: becomes ``True``), with why. They decide the converted value, which is the value their tool
#: then gets; every other edge takes what a model sent and validates it as strict JSON, so it
#: refuses a coerced value as ``invalid``. Either way the rule written for the value holds.
PYTHON_MODE: dict[str, str] = {
    "decorator-async": "a Python caller's values, converted as the function will get them",
    "decorator-sync": "a Python caller's values, converted as the function will get them",
}


@pytest.mark.parametrize("edge_name", list(EDGES))
async def test_no_coerced_value_walks_round_its_rule(edge_name: str) -> None:
    calls = [("apply", args, AGENT) for args, _ in COERCED]
    played = await play(edge_name, [*calls, ("apply", {"change": {"env": "staging"}}, AGENT)])
    assert played.ran == [[]] * len(COERCED) + [["apply"]]  # the plain call still runs
    for (args, rule), records, (ok, _) in zip(COERCED, played.records, played.results,
                                              strict=False):
        assert not ok
        outcome = [(r["type"], r.get("rule_id")) for r in records]
        if edge_name in PYTHON_MODE and rule == "forced":
            # Decided on the value the tool would get, by the rule written for it.
            assert outcome == [("call.denied", "forced")], (args, outcome)
            assert records[0]["args"]["force"] is True
        else:
            assert outcome == [("call.invalid", None)], (args, outcome)


#: (the call, who makes it, what must happen) — alice's "approve for 1h" of a staging deploy
GRANT_CALLS: list[tuple[str, dict[str, Any], RunContext, str]] = [
    ("deploy", {"env": "staging"}, AGENT, "approved by alice for 1h"),
    ("deploy", {"env": "staging"}, AGENT, "ran on the grant"),
    ("deploy", {"env": "production"}, AGENT, "another rule: asked, denied"),
    ("deploy", {"env": "staging"}, OTHER_AGENT, "another principal: asked, denied"),
    ("deploy", {"env": "staging"}, FOR_DAVE, "another human: asked, denied"),
]


@pytest.mark.parametrize("edge_name", list(EDGES))
async def test_a_grant_covers_its_rule_caller_and_human_only(edge_name: str) -> None:
    calls = [(tool, args, run) for tool, args, run, _ in GRANT_CALLS]
    if edge_name in PARTIAL:
        calls = calls[:4]  # the proxy cannot be told whom an agent acts for
    played = await play(edge_name, calls)
    assert played.ran == [["deploy"], ["deploy"]] + [[]] * (len(calls) - 2)
    first, again, *others = played.records
    assert "grant.created" in types(first)
    (executed,) = [r for r in again if r["type"] == "call.executed"]
    assert executed["grant_id"] and "challenge.created" not in types(again)
    for records, (_, _, _, expect) in zip(others, GRANT_CALLS[2:], strict=False):
        assert "challenge.created" in types(records), expect
        assert "call.executed" not in types(records), expect


@pytest.mark.parametrize("edge_name", list(EDGES))
async def test_one_person_is_one_vote_whatever_the_spelling(edge_name: str) -> None:
    played = await play(edge_name, [("rotate_root", {"name": "spelled-twice"}, AGENT),
                                    ("rotate_root", {"name": "k2"}, AGENT)])
    assert played.ran == [[], ["rotate_root"]]
    twice, two_people = played.records
    recorded = [r for r in twice if r["type"] == "vote.recorded"]
    assert len(recorded) <= 1, recorded
    assert "call.executed" not in types(twice)
    executed = [r for r in two_people if r["type"] == "call.executed"]
    assert [sorted(r["approvers"]) for r in executed] == [["carol", "dave"]]
