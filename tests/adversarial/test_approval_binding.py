"""What is approved is exactly what runs: attacks on the core's binding of an approval.

Each test is an attack that worked on an earlier main (issue 13): arguments mutated while a
human reads them, values the policy and the tool read differently, numbers that are not
numbers, grants that widened across rules and humans, one approver counted twice, a hold
whose caller gave up that stayed approvable, and policy fields that did nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import pytest

from agentguard import Guard, Policy, ToolCallRefused, guarded
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.canonical import call_hash
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.context import acting_as
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall
from tests.adversarial.helpers import POLICY, vote

pytestmark = pytest.mark.anyio


class SlowApprover(ScriptedChannel):
    """Approves after a pause, and records what it was shown."""

    def __init__(self, approver: str = "alice", *, delay: float = 0.3, **kw: Any) -> None:
        super().__init__([vote(approver, **kw)], delay=delay)
        self.shown: list[ApprovalRequest] = []

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.shown.append(request)
        async for answer in super().ask(request):
            yield answer


# ------------------------------------------------------------------ 1. mutated during the hold


def test_arguments_mutated_while_the_human_reads_never_reach_the_function() -> None:
    audit = MemoryAuditLog()
    channel = SlowApprover(delay=0.5)
    guard = Guard(Policy.from_yaml(POLICY), audit=audit, channels=[channel])
    ran: list[tuple[list[str], dict[str, Any]]] = []

    @guarded(name="delete", guard=guard)
    def delete(paths: list[str], options: dict[str, Any], path: str = "/data") -> str:
        ran.append((paths, options))
        return "deleted"

    paths = ["/data/reports"]
    options = {"recursive": False}

    def attacker() -> None:
        time.sleep(0.2)  # the call is held: the human is reading it now
        paths[0] = "/"
        options["recursive"] = True

    thread = threading.Thread(target=attacker)
    thread.start()
    with acting_as("agent:ops"):
        assert delete(paths, options) == "deleted"
    thread.join()
    assert paths == ["/"]  # the attacker did change its own objects...
    assert ran == [(["/data/reports"], {"recursive": False})]  # ...but they never ran
    shown = channel.shown[0].call["args"]
    assert shown["paths"] == ["/data/reports"] and shown["options"] == {"recursive": False}
    executed = next(e for e in audit.events if e["type"] == "call.executed")
    assert executed["args"] == {"paths": ["/data/reports"], "options": {"recursive": False},
                                "path": "/data"}
    rebuilt = ToolCall(tool="delete", args=executed["args"], principal=Principal("agent:ops"))
    assert call_hash(rebuilt) == executed["call_hash"]


async def test_async_positional_and_keyword_arguments_are_rebuilt_from_the_snapshot() -> None:
    guard = Guard(Policy.from_yaml(POLICY), channels=[SlowApprover(delay=0.3)])
    seen: list[Any] = []

    @guarded(name="delete", guard=guard)
    async def delete(path: str, /, tags: list[str], *extra: int, note: dict[str, str]) -> None:
        seen.append((path, tags, extra, note))

    tags, note = ["a"], {"why": "cleanup"}

    async def attacker() -> None:
        await anyio.sleep(0.1)
        tags.append("everything")
        note["why"] = "exfiltrate"

    async with anyio.create_task_group() as tg:
        tg.start_soon(attacker)
        await delete("/data/x", tags, 1, 2, note=note)
    assert seen == [("/data/x", ["a"], (1, 2), {"why": "cleanup"})]


# ------------------------------------------------------------------ 2. types before rules

TYPED_POLICY = """
defaults: {timeout: 3s}
classes:
  read: {require: allow}
  destructive: {require: approve, approvers: [alice]}
rules:
  - {id: forced, match: {tool: deploy, args: {force: true}}, class: destructive}
  - {id: prod, match: {tool: deploy, args: {env: production}}, class: destructive}
  - {id: deploy, match: {tool: deploy}, class: read}
"""


def test_a_coercible_string_is_seen_by_the_policy_as_the_value_the_function_gets() -> None:
    guard = Guard(Policy.from_yaml(TYPED_POLICY))  # no channel: any hold is unreachable
    ran: list[Any] = []

    @guarded(guard=guard)
    def deploy(env: Literal["staging", "production"], force: bool = False) -> None:
        ran.append((env, force))

    with pytest.raises(ToolCallRefused) as held:
        deploy("staging", force="true")  # the function would get True: the rule sees True
    assert held.value.kind == "unreachable" and held.value.rule_id == "forced"
    with pytest.raises(ToolCallRefused) as invalid:
        deploy("production ")  # not a Literal member: refused before any rule
    assert invalid.value.kind == "invalid" and invalid.value.rule_id is None
    assert "env" in invalid.value.reason
    deploy("staging")
    assert ran == [("staging", False)]


async def test_validation_failures_are_audited_and_never_reach_a_rule_or_a_human() -> None:
    audit = MemoryAuditLog()
    channel = SlowApprover(delay=0)
    guard = Guard(Policy.from_yaml(TYPED_POLICY), audit=audit, channels=[channel])

    @guarded(guard=guard)
    async def deploy(env: Literal["staging", "production"], replicas: int = 1) -> None:
        raise AssertionError("must not run")

    for args in (("prod",), ("staging", "many")):
        with pytest.raises(ToolCallRefused) as refused:
            await deploy(*args)
        assert refused.value.kind == "invalid"
    assert [e["type"] for e in audit.events] == ["call.invalid", "call.invalid"]
    assert all(e["outcome"] == "invalid" for e in audit.events)
    assert channel.shown == []


# ------------------------------------------------------------------ 3. numbers that are not numbers


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_are_refused_even_where_the_policy_allows(value: float) -> None:
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(TYPED_POLICY), audit=audit)
    ran: list[Any] = []

    @guarded(guard=guard)
    def deploy(env: str, ratio: Any = 1.0) -> None:  # Any: pydantic would pass it through
        ran.append(ratio)

    with pytest.raises(ToolCallRefused) as refused:
        deploy("staging", ratio=[value])
    assert refused.value.kind == "invalid"
    assert ran == [] and [e["type"] for e in audit.events] == ["call.invalid"]


# ------------------------------------------------------------------ 5. grants never widen

GRANT_POLICY = """
defaults: {timeout: 5s, pending_per_class: 4}
groups: {release: [alice, bob], security: [carol, dave]}
classes:
  read: {require: allow}
  destructive: {require: approve, approvers: [group:release], max_grant: 1h}
rules:
  - id: prod-deploy
    match: {tool: deploy, args: {env: production}}
    class: destructive
    approvers: [group:security]
    quorum: 2
    separation_of_duties: true
    max_grant: 0s
  - {id: deploy, match: {tool: deploy}, class: destructive}
"""


def deploy_call(env: str, *, acting_for: str | None = None) -> ToolCall:
    return ToolCall(tool="deploy", args={"env": env}, principal=Principal("agent:shared"),
                    context=CallContext(acting_for=acting_for))


async def test_a_grant_for_staging_never_runs_production_nor_another_humans_call() -> None:
    audit = MemoryAuditLog()
    approver = ScriptedChannel(lambda r: [vote("alice", grant_ttl=3600)]
                               if r.rule_id == "deploy" else [])
    guard = Guard(Policy.from_yaml(GRANT_POLICY), audit=audit, channels=[approver])
    first = await guard.authorize(deploy_call("staging", acting_for="carol"))
    assert first.outcome == "approved"
    assert any(e["type"] == "grant.created" for e in audit.events)
    again = await guard.authorize(deploy_call("staging-2", acting_for="carol"))
    assert again.outcome == "approved" and again.request_id is None  # the grant covered it

    # Same principal and class, a stricter rule: two security approvers, no grants at all.
    quiet = Guard(Policy.from_yaml(GRANT_POLICY.replace("timeout: 5s", "timeout: 1s")),
                  store=guard.store, audit=audit, channels=[ScriptedChannel([])])
    prod = await quiet.authorize(deploy_call("production", acting_for="carol"))
    assert prod.outcome == "expired" and prod.rule_id == "prod-deploy"
    # Same rule, another human behind the shared agent: carol's grant is not dave's.
    dave = await quiet.authorize(deploy_call("staging", acting_for="dave"))
    assert dave.outcome == "expired"
    used = [e for e in audit.events if e["type"] == "grant.used"]
    assert len(used) == 1 and used[0]["args"] == {"env": "staging-2"}


async def test_a_policy_edit_of_the_rules_approval_settings_retires_its_grants() -> None:
    store = MemoryStore()
    approver = ScriptedChannel([vote("alice", grant_ttl=3600)])
    guard = Guard(Policy.from_yaml(GRANT_POLICY), store=store, channels=[approver])
    assert (await guard.authorize(deploy_call("staging"))).outcome == "approved"
    assert len(await store.list_grants()) == 1
    stricter = GRANT_POLICY.replace("approvers: [group:release], max_grant: 1h",
                                    "approvers: [group:release], quorum: 2, max_grant: 1h")
    edited = Guard(Policy.from_yaml(stricter.replace("timeout: 5s", "timeout: 1s")),
                   store=store, channels=[ScriptedChannel([])])
    assert (await edited.authorize(deploy_call("staging-2"))).outcome == "expired"
    same = Guard(Policy.from_yaml(GRANT_POLICY), store=store, channels=[ScriptedChannel([])])
    assert (await same.authorize(deploy_call("staging-3"))).outcome == "approved"


async def test_preapproval_is_a_single_use_grant_for_exactly_that_call() -> None:
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(GRANT_POLICY), audit=audit,
                  channels=[ScriptedChannel([vote("alice")])])
    ahead = await guard.preapprove(deploy_call("staging", acting_for="carol"))
    assert ahead.outcome == "approved" and not any(
        e["type"] == "call.executed" for e in audit.events)
    quiet = Guard(Policy.from_yaml(GRANT_POLICY.replace("timeout: 5s", "timeout: 1s")),
                  store=guard.store, audit=audit, channels=[ScriptedChannel([])])
    assert (await quiet.authorize(deploy_call("staging", acting_for="dave"))).outcome == \
        "expired"
    assert (await quiet.authorize(deploy_call("staging-2", acting_for="carol"))).outcome == \
        "expired"
    run = await quiet.authorize(deploy_call("staging", acting_for="carol"))
    assert run.outcome == "approved"
    assert (await quiet.authorize(deploy_call("staging", acting_for="carol"))).outcome == \
        "expired"  # single use
    assert [e["type"] for e in audit.events if e["type"].startswith(("grant", "call.exec"))] \
        == ["grant.used", "call.executed"]


async def test_asking_ahead_twice_does_not_spend_the_grant_the_run_needs() -> None:
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(GRANT_POLICY), audit=audit,
                  channels=[ScriptedChannel([vote("alice")])])
    assert (await guard.preapprove(deploy_call("staging"))).outcome == "approved"
    again = await guard.preapprove(deploy_call("staging"))  # the framework asks once more
    assert again.outcome == "approved" and again.request_id is None
    quiet = Guard(Policy.from_yaml(GRANT_POLICY.replace("timeout: 5s", "timeout: 1s")),
                  store=guard.store, audit=audit, channels=[ScriptedChannel([])])
    assert (await quiet.authorize(deploy_call("staging"))).outcome == "approved"
    types = [e["type"] for e in audit.events]
    assert types.count("challenge.created") == 1 and types.count("call.executed") == 1


# ------------------------------------------------------------------ 6. one person, one vote


@pytest.mark.parametrize("spellings", [("carol", "user:carol"), ("carol", "Carol "),
                                       ("os:carol", "human:CAROL")])
async def test_one_approver_under_two_spellings_is_one_vote(spellings: tuple[str, str]) -> None:
    policy = Policy.from_yaml(GRANT_POLICY.replace("timeout: 5s", "timeout: 1s"))
    guard = Guard(policy, channels=[ScriptedChannel([vote(s) for s in spellings])])
    auth = await guard.authorize(deploy_call("production", acting_for="erin"))
    assert auth.outcome == "expired"  # quorum 2 is not met by one person
    request = (await guard.store.list_requests(limit=1))[0]
    assert len([v for v in request.votes if v.approve]) == 1


# ------------------------------------------------------------------ 9. a caller that gave up


async def test_a_cancelled_hold_is_cancelled_in_the_store_audited_and_frees_its_slot() -> None:
    audit = MemoryAuditLog()
    settled: list[str] = []

    class Watching(ScriptedChannel):
        async def settled(self, request: ApprovalRequest) -> None:
            settled.append(request.status)

    policy = Policy.from_yaml(GRANT_POLICY.replace("pending_per_class: 4",
                                                   "pending_per_class: 1"))
    guard = Guard(policy, audit=audit, channels=[Watching([])])
    with anyio.move_on_after(0.5):
        await guard.authorize(deploy_call("staging"))
    request = (await guard.store.list_requests(limit=1))[0]
    assert request.status == "cancelled"
    assert settled == ["cancelled"]
    assert [e["type"] for e in audit.events] == ["challenge.created", "challenge.cancelled"]
    _, problem = await cast_vote(store=guard.store, audit=audit, request_id=request.id,
                                 approver="alice", approve=True, channel="cli")
    assert problem is not None and "no longer pending" in problem
    # The slot is free: the caller's next sensitive call is asked about, not refused.
    quick = Guard(policy, store=guard.store, audit=audit,
                  channels=[ScriptedChannel([vote("alice")])])
    assert (await quick.authorize(deploy_call("staging-2"))).outcome == "approved"


# ------------------------------------------------------------------ 10. fields that did nothing


async def test_redact_paths_never_reach_the_audit_log_the_store_or_a_channel() -> None:
    policy = Policy.from_yaml("""
defaults: {timeout: 3s}
classes: {read: {require: allow}, destructive: {require: approve, approvers: [alice]}}
rules:
  - id: connect
    match: {tool: connect}
    class: destructive
    redact: [dsn, "auth.*.secret"]
""")
    audit = MemoryAuditLog()
    channel = SlowApprover(delay=0)
    guard = Guard(policy, audit=audit, channels=[channel])
    secret = "postgresql://admin:hunter2@db/prod"
    call = ToolCall(tool="connect", principal=Principal("agent:a"),
                    args={"dsn": secret, "auth": {"x": {"secret": "s3cr3t-value"}}, "db": "p"})
    auth = await guard.authorize(call)
    assert auth.outcome == "approved" and auth.call.args["dsn"] == secret  # it runs as sent
    stored = (await guard.store.list_requests(limit=1))[0]
    for text in (repr(audit.events), repr(stored.call), repr(channel.shown[0].call)):
        assert "hunter2" not in text and "s3cr3t-value" not in text
    assert channel.shown[0].call["args"]["db"] == "p"


async def test_a_channel_that_does_not_declare_itself_verified_is_not_trusted() -> None:
    class Unverified:
        name = "chatty"

        async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
            yield ChannelAnswer(kind="vote", channel=self.name, approver="alice", approve=True)

        async def settled(self, request: ApprovalRequest) -> None:
            return None

    guard = Guard(Policy.from_yaml(POLICY), channels=[Unverified()])
    auth = await guard.authorize(ToolCall(tool="restart", args={"service": "api"},
                                          principal=Principal("agent:a")))
    assert auth.outcome == "unreachable"
