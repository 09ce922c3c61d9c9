"""One policy, same decision everywhere.

Every edge (the decorator, each framework adapter, sync and async where the framework has
both, and the MCP proxy) gets the same policy, the same tools and the same sequence of calls
from the same callers. Each must give the same results (the tool's output, or the same
refusal text), write the same audit records (minus ids, times and the edge's name), and never
run a refused tool. The edges themselves are in ``tests/adapters/edges.py``.

Some edges cannot be told everything about a caller per call (``edges.PARTIAL``): the MCP
proxy's principal is its configuration, its source address the HTTP peer, and it has no way
to learn whom an agent acts for. Such an edge plays the calls reduced to what it can be told,
against the decorator playing the same reduced calls, one test per call; a call whose outcome
the reduction changes is not applicable to that edge, listed with the reason in
:data:`NOT_APPLICABLE` and shown as skipped (checked: exactly those calls change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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

from .adapters import proxy_edge
from .adapters.edges import EDGES, PARTIAL, Result

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

Call = tuple[str, dict[str, Any], RunContext, str]

#: (tool, arguments as the model sends them, who calls, what should happen)
CALLS: list[Call] = [
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

#: (edge, index in CALLS) -> why that edge cannot make that call: its outcome turns on a
#: caller fact the edge has no way to be told. Kept exact by
#: test_reduction_changes_only_the_calls_marked_not_applicable.
NOT_APPLICABLE: dict[tuple[str, int], str] = {
    ("mcp-proxy", 5): "separation of duties against acting_for='alice', and nothing tells the "
                      "MCP proxy whom an agent acts for",
    ("mcp-proxy", 10): "re-authenticates acting_for='user:carol'; nothing tells the MCP proxy "
                       "whom an agent acts for, so it would re-authenticate the agent itself",
    ("mcp-proxy", 11): "re-authentication of acting_for='user:mallory' fails; nothing tells the "
                       "MCP proxy whom an agent acts for, so it would re-authenticate the agent",
}
#: (edge, index in CALLS) -> a known bug that makes that call's audit records differ.
KNOWN_AUDIT_BUGS: dict[tuple[str, int], str] = {}


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


def make_guard(policy: str = POLICY) -> Guard:
    return Guard(Policy.from_yaml(policy), store=MemoryStore(),
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


@dataclass
class SuiteSetup:
    """The guard and tools every edge is built from (see ``edges.Setup``)."""

    policy: str = POLICY
    make_tools = staticmethod(make_tools)

    def make_guard(self) -> Guard:
        return make_guard(self.policy)


@dataclass
class Transcript:
    results: list[Result]
    audit: list[dict[str, Any]]
    ran: list[str]
    origins: set[str]
    spans: list[tuple[int, int]] = field(default_factory=list)
    """Which of ``audit`` each call wrote (start, end)."""
    ran_by_call: list[list[str]] = field(default_factory=list)

    def audit_by_call(self, audit: list[dict[str, Any]] | None = None
                      ) -> list[list[dict[str, Any]]]:
        """The records each call wrote, taken from ``audit`` (a normalised ``self.audit``)."""
        records = self.audit if audit is None else audit
        return [records[start:end] for start, end in self.spans]


async def play(edge_name: str, calls: list[Call] = CALLS,
               setup: SuiteSetup | None = None) -> Transcript:
    factory, sync, _ = EDGES[edge_name]
    edge = await factory(sync, setup or SuiteSetup())
    log = edge.guard.audit
    results: list[Result] = []
    spans: list[tuple[int, int]] = []
    ran_by_call: list[list[str]] = []
    try:
        for tool, args, run, _ in calls:
            seen, done = len(log.events), len(edge.ran)  # type: ignore[attr-defined]
            results.append(await edge.call(tool, dict(args), run))
            spans.append((seen, len(log.events)))  # type: ignore[attr-defined]
            ran_by_call.append(list(edge.ran[done:]))
    finally:
        for close in edge.closers:
            await close()
    events = log.events  # type: ignore[attr-defined]
    audit = [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]
    origins = {e["origin"] for e in events if "origin" in e}
    return Transcript(results, audit, list(edge.ran), origins, spans, ran_by_call)


@pytest.fixture(scope="module")
def reference() -> Transcript:
    return anyio.run(play, "decorator-async")


def reduced(edge_name: str) -> list[Call]:
    """Every call of CALLS as a partial edge can be told it."""
    keep = PARTIAL[edge_name]
    return [(tool, args, keep(run), expect) for tool, args, run, expect in CALLS]


def applicable(edge_name: str) -> list[int]:
    """Indices in CALLS of the calls a partial edge plays."""
    return [i for i in range(len(CALLS)) if (edge_name, i) not in NOT_APPLICABLE]


def relabel_call_hashes(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``call_hash`` covers (server, tool, tool definition hash, args, principal, session):
    an edge that differs in one the caller does not choose (the proxy pins each tool's
    definition hash, names its upstream, takes its transport's session) hashes the same call
    differently. Each hash becomes the order it first appears in, which keeps what can be
    compared: which records are about the same call (a cooldown names the denied call)."""
    labels: dict[str, str] = {}
    return [e | {"call_hash": labels.setdefault(e["call_hash"], f"call#{len(labels)}")}
            if "call_hash" in e else e for e in audit]


def as_the_decorator_sees(edge_name: str, audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An edge's audit records with what legitimately differs by edge in the decorator's terms,
    as ``origin`` (dropped with VOLATILE for every edge): the call hash (see
    :func:`relabel_call_hashes`) and, for the MCP proxy, its upstream's server name (see
    ``proxy_edge.SERVER``: the same tools, served under another name)."""
    out = relabel_call_hashes(audit)
    if edge_name == "mcp-proxy":
        out = [e | {"server": "local"} if e.get("server") == proxy_edge.SERVER else e
               for e in out]
    return out


def without_dropped_facts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One call's records minus the caller facts a reduction may drop (or, for the source
    address, fill in: the proxy's TCP peer), the hash that covers them, and the records'
    positions in the log (``seq``, shifted by any earlier call that the reduction changed).
    What those facts decide still shows in the signals, rules and reasons compared."""
    return relabel_call_hashes([{k: v for k, v in e.items()
                                 if k not in ("acting_for", "session_id", "source_ip", "seq")}
                                for e in records])


class PartialRuns:
    """Each partial edge's transcript of the calls it can make, and the decorator's of the
    same calls, played once per module (a failure is kept and raised again, not replayed)."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[Transcript, Transcript] | BaseException] = {}

    def get(self, edge_name: str) -> tuple[Transcript, Transcript]:
        if edge_name not in self._runs:
            calls = [reduced(edge_name)[i] for i in applicable(edge_name)]
            try:
                self._runs[edge_name] = (anyio.run(play, edge_name, calls),
                                         anyio.run(play, "decorator-async", calls))
            except Exception as exc:
                self._runs[edge_name] = exc
        runs = self._runs[edge_name]
        if isinstance(runs, BaseException):
            raise runs
        return runs


@pytest.fixture(scope="module")
def partial_runs() -> PartialRuns:
    return PartialRuns()


def per_call(marks: Callable[[str, int], list[pytest.MarkDecorator]]) -> list[Any]:
    """(edge, index) parameters for every partial edge and call; not-applicable ones skip."""
    params = []
    for edge_name in PARTIAL:
        for index, (tool, _, _, expect) in enumerate(CALLS):
            reason = NOT_APPLICABLE.get((edge_name, index))
            skip = [pytest.mark.skip(reason=f"call {index:02d} ({tool}: {expect}) is not "
                                            f"applicable to {edge_name}: {reason}")]
            params.append(pytest.param(edge_name, index, id=f"{edge_name}-{index:02d}-{tool}",
                                       marks=skip if reason else marks(edge_name, index)))
    return params


def known_audit_bug(edge_name: str, index: int) -> list[pytest.MarkDecorator]:
    reason = KNOWN_AUDIT_BUGS.get((edge_name, index))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


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
    # The edited call is validated like any call: the function's defaults are filled in.
    assert executed[2]["args"] == {"path": "/tmp/x", "recursive": False}
    assert types.count("challenge.edited") == 1
    assert all(e["principal"] == "agent:ops" for e in executed)


@pytest.mark.parametrize("edge_name", [n for n in EDGES
                                       if n != "decorator-async" and n not in PARTIAL])
async def test_edge_matches_the_decorator(edge_name: str, reference: Transcript) -> None:
    got = await play(edge_name)
    for (tool, args, run, expect), want, have in zip(CALLS, reference.results, got.results,
                                                     strict=True):
        assert have == want, f"{edge_name}: {tool}({args}) as {run.principal}: {expect}"
    assert got.ran == reference.ran, f"{edge_name} ran a different set of tools"
    assert got.audit == reference.audit
    assert got.origins == {EDGES[edge_name][2]}


@pytest.mark.parametrize("edge_name", list(PARTIAL))
def test_reduction_changes_only_the_calls_marked_not_applicable(
        edge_name: str, reference: Transcript) -> None:
    """The decorator, told only what the partial edge can be told, answers and audits every
    applicable call as the reference does (but for the dropped facts themselves), and every
    call marked not applicable differently: the list is neither stale nor too wide."""
    told_less = anyio.run(play, "decorator-async", reduced(edge_name))

    def steps(t: Transcript) -> list[Any]:
        audit = [without_dropped_facts(records) for records in t.audit_by_call()]
        return list(zip(t.results, t.ran_by_call, audit, strict=True))

    changed = {i for i, (full, less) in enumerate(zip(steps(reference), steps(told_less),
                                                      strict=True)) if full != less}
    assert changed == {i for edge, i in NOT_APPLICABLE if edge == edge_name}


@pytest.mark.parametrize(("edge_name", "index"), per_call(lambda edge, index: []))
def test_partial_edge_answers_like_the_decorator(edge_name: str, index: int,
                                                 partial_runs: PartialRuns) -> None:
    mine, decorator = partial_runs.get(edge_name)
    k = applicable(edge_name).index(index)
    tool, args, run, expect = CALLS[index]
    where = f"{edge_name}: {tool}({args}) as {run.principal}: {expect}"
    assert mine.results[k] == decorator.results[k], where
    assert mine.ran_by_call[k] == decorator.ran_by_call[k], where


@pytest.mark.parametrize(("edge_name", "index"), per_call(known_audit_bug))
def test_partial_edge_audits_like_the_decorator(edge_name: str, index: int,
                                                partial_runs: PartialRuns) -> None:
    mine, decorator = partial_runs.get(edge_name)
    k = applicable(edge_name).index(index)
    have = mine.audit_by_call(as_the_decorator_sees(edge_name, mine.audit))[k]
    want = decorator.audit_by_call(as_the_decorator_sees("decorator-async", decorator.audit))[k]
    assert have == want


@pytest.mark.parametrize("edge_name", list(PARTIAL))
def test_partial_edge_transcript(edge_name: str, reference: Transcript,
                                 partial_runs: PartialRuns) -> None:
    mine, decorator = partial_runs.get(edge_name)
    calls = applicable(edge_name)
    # Leaving the not-applicable calls out changes nothing for the others.
    assert decorator.results == [reference.results[i] for i in calls]
    assert decorator.ran_by_call == [reference.ran_by_call[i] for i in calls]
    assert mine.ran == decorator.ran, f"{edge_name} ran a different set of tools"
    # Every record was written during one call (none late, none lost between calls).
    assert sum(end - start for start, end in mine.spans) == len(mine.audit)
    assert len(mine.audit) == len(decorator.audit)
    assert mine.origins == {EDGES[edge_name][2]}


SCHEMA_DEFAULTS_POLICY = POLICY.replace(
    "  - {id: deletes,",
    "  - {id: shallow, match: {tool: delete, args: {recursive: false}}, require: deny}\n"
    "  - {id: deletes,")
SHALLOW_DELETE: list[Call] = [("delete", {"path": "/tmp/a"}, proxy_edge.expressible(AGENT),
                               "denied by rule 'shallow': recursive defaults to false")]


async def test_a_rule_on_a_schema_default_applies_through_the_decorator() -> None:
    got = await play("decorator-async", SHALLOW_DELETE, SuiteSetup(SCHEMA_DEFAULTS_POLICY))
    assert got.ran == []
    assert got.results[0][0] is False and "by rule 'shallow'" in got.results[0][1]


async def test_a_rule_on_a_schema_default_applies_through_the_mcp_proxy() -> None:
    """The client leaves ``recursive`` to its default (false): the decorator denies the call
    by rule 'shallow'; the proxy's policy never sees ``recursive``, asks alice instead, and
    the delete runs. With a default that is the risky value, the same gap lets a call past
    a rule meant to stop it."""
    got = await play("mcp-proxy", SHALLOW_DELETE, SuiteSetup(SCHEMA_DEFAULTS_POLICY))
    assert got.ran == []
    assert got.results[0][0] is False and "by rule 'shallow'" in got.results[0][1]


async def test_an_upstream_named_local_is_not_trusted_like_in_process_tools(
        reference: Transcript) -> None:
    """No rule covers rotate_key: the decorator holds it (the pager is down, so it is refused
    as unreachable). Served by an upstream the proxy calls ``local``, declaring itself
    read-only, it must not run unasked. Refusing the name at start-up would do as well."""
    from pydantic import ValidationError

    from agentguard.errors import ConfigError

    fleet = proxy_edge.ProxyFleet(make_guard(), make_tools, server="local")
    await fleet.open()
    try:
        result = await fleet.call("rotate_key", {"name": "k1"}, proxy_edge.expressible(AGENT))
        ran = fleet.runs()
    except (ConfigError, ValidationError) as exc:
        assert "local" in str(exc)
        return
    finally:
        await fleet.close()
    assert ran == []
    assert result == reference.results[9]


# --------------------------------------------------------------------------- issue 13 attacks

#: The suite's policy with one more rule: paths under prod/ may never be deleted. The path
#: operator normalises before matching, so no spelling walks round it.
PATH_POLICY = POLICY.replace(
    "  - {id: deletes, match: {tool: delete}",
    "  - {id: no-prod-deletes, match: {tool: delete, args: {path: {path: \"prod/**\"}}}, "
    "require: deny}\n  - {id: deletes, match: {tool: delete}")

#: Calls no edge may run, whatever its framework does with arguments.
ATTACKS: list[Call] = [
    ("delete", {"path": "staging/../prod/db"}, AGENT, "denied: prod in disguise"),
    ("delete", {"path": "prod//db"}, AGENT, "denied: prod in disguise"),
    ("delete", {"path": "./prod/db/"}, AGENT, "denied: prod in disguise"),
    ("delete", {"path": "/tmp/a", "recursive": float("nan")}, AGENT, "invalid"),
    ("delete", {"path": "/tmp/a", "recursive": float("inf")}, AGENT, "invalid"),
    ("delete", {"path": "/tmp/a", "recursive": float("-inf")}, AGENT, "invalid"),
]


@pytest.mark.parametrize("edge_name", list(EDGES))
async def test_no_edge_runs_a_disguised_path_or_a_number_that_is_not_one(
    edge_name: str
) -> None:
    keep = PARTIAL.get(edge_name, lambda run: run)
    factory, sync, _ = EDGES[edge_name]
    edge = await factory(sync, SuiteSetup(policy=PATH_POLICY))
    log = edge.guard.audit
    per_call: list[list[dict[str, Any]]] = []
    try:
        for tool, args, run, _ in ATTACKS:
            seen = len(log.events)  # type: ignore[attr-defined]
            try:
                await edge.call(tool, dict(args), keep(run))
            except Exception as exc:  # a framework that validates first raises its own error
                assert "valid" in str(exc), exc
            per_call.append(list(log.events[seen:]))  # type: ignore[attr-defined]
    finally:
        for close in edge.closers:
            await close()
    assert edge.ran == []
    for records in per_call[:3]:
        assert [(r["type"], r["rule_id"]) for r in records] == [
            ("call.denied", "no-prod-deletes")], records
    for records in per_call[3:]:
        # Refused before any rule, as invalid. (A framework that validates before the tool is
        # called, like a LangChain tool's own schema, may refuse first: then the guard never
        # sees the call, and nothing runs either.)
        assert [r["type"] for r in records] in (["call.invalid"], []), records
