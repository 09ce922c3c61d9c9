"""The guard end to end on real stores: allow, deny, approve, expire, unreachable, grants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy
from agentguard.audit import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import MemoryStore, SQLiteStore
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 2s, deny_cooldown: 1m}
groups: {oncall: [alice, bob], security: [carol, dave]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall], max_grant: 15m}
  privileged: {require: approve, approvers: [group:security], quorum: 2,
               separation_of_duties: true}
rules:
  - {id: reads, match: {tool: "get_*"}, class: read}
  - {id: forbidden, match: {tool: drop_database}, require: deny}
  - {id: restart-everything, match: {tool: restart, args: {service: all}}, class: privileged}
  - {id: restart, match: {tool: restart}, class: destructive}
  - {id: delete, match: {tool: delete}, class: destructive}
  - {id: iam, match: {tool: iam.update}, class: privileged, labels: [policy]}
"""

AGENT = Principal("agent:support-bot", "agent")


def call(tool: str, **args: object) -> ToolCall:
    return ToolCall(tool=tool, args=args, principal=AGENT,
                    context=CallContext(acting_for="carol"))


class CountingChannel(ScriptedChannel):
    """A scripted channel that records each request it was asked about."""

    def __init__(self, *answers: ChannelAnswer, delay: float = 0.0) -> None:
        super().__init__(list(answers), delay=delay)
        self.asked: list[ApprovalRequest] = []

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.asked.append(request)
        async for answer in super().ask(request):
            yield answer


def vote(who: str, approve: bool = True, **kw: object) -> ChannelAnswer:
    return ScriptedChannel.vote(who, approve, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    return MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")


def types_of(audit: MemoryAuditLog) -> list[str]:
    return [e["type"] for e in audit.events]


async def test_routine_call_is_allowed_without_audit_noise(store) -> None:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit) as guard:
        auth = await guard.authorize(call("get_status"))
    assert auth.allowed and auth.outcome == "allowed"
    assert audit.events == []


async def test_policy_deny_is_audited_with_rule_and_reason(store) -> None:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit) as guard:
        auth = await guard.authorize(call("drop_database", name="prod"))
    assert auth.outcome == "denied" and auth.rule_id == "forbidden"
    assert "Retrying the same call will not help" in auth.message()
    [event] = audit.events
    assert event["type"] == "call.denied" and event["rule_id"] == "forbidden"


async def test_approved_call_runs_once_and_is_audited(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("alice"))
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service="api"))
        assert auth.outcome == "approved" and auth.approvers == ("alice",)
        stored = await guard.store.get_request(auth.request_id)
        assert stored is not None and stored.status == "consumed"
        # The same call again is a new request: the approval was single use.
        again = await guard.authorize(call("restart", service="api"))
        assert again.outcome == "approved" and again.request_id != auth.request_id
    assert len(channel.asked) == 2
    assert types_of(audit) == ["challenge.created", "call.executed"] * 2
    assert audit.events[0]["approvers"] == ["alice", "bob"]


async def test_approval_is_bound_to_the_exact_arguments(store) -> None:
    channel = CountingChannel(vote("alice"))
    async with Guard(Policy.from_yaml(POLICY), store=store, channels=[channel]) as guard:
        first = await guard.authorize(call("restart", service="api"))
        request = await guard.store.get_request(first.request_id)
        assert request is not None
        other = call("restart", service="database")
        from agentguard.canonical import call_hash

        assert call_hash(other) != request.call_hash
        assert not await guard.store.consume(first.request_id, call_hash(other))
        second = await guard.authorize(other)
    assert second.request_id != first.request_id
    assert [r.call["args"] for r in channel.asked] == [{"service": "api"},
                                                       {"service": "database"}]


async def test_denied_call_enters_cooldown(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("bob", False, reason="not during the incident"))
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service="api"))
        assert auth.outcome == "denied"
        assert "not during the incident" in auth.reason
        again = await guard.authorize(call("restart", service="api"))
    assert again.outcome == "denied" and "just denied" in again.reason
    assert len(channel.asked) == 1
    assert types_of(audit) == ["challenge.created", "challenge.denied", "call.denied"]


async def test_unauthorised_approver_is_ignored_and_call_expires(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("mallory"))
    policy = Policy.from_yaml(POLICY.replace("timeout: 2s", "timeout: 1s"))
    async with Guard(policy, store=store, audit=audit, channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service="api"))
    assert auth.outcome == "expired"
    assert types_of(audit) == ["challenge.created", "vote.rejected", "challenge.expired"]
    assert "not an approver" in audit.events[1]["detail"]


async def test_two_person_rule_with_separation_of_duties(store) -> None:
    audit = MemoryAuditLog()
    # carol is the human the agent acts for: her vote must not count.
    channel = CountingChannel(vote("carol"), vote("dave"), vote("dave"), vote("user:Carol"))
    policy = Policy.from_yaml(POLICY.replace("timeout: 2s", "timeout: 1s"))
    async with Guard(policy, store=store, audit=audit, channels=[channel]) as guard:
        auth = await guard.authorize(call("iam.update", policy="allow *"))
    assert auth.outcome == "expired"  # only one valid distinct approver (dave)
    rejected = [e for e in audit.events if e["type"] == "vote.rejected"]
    assert len(rejected) == 2 and all("separation of duties" in e["detail"] for e in rejected)


async def test_quorum_of_two_distinct_approvers(store) -> None:
    channel = CountingChannel(vote("dave"), vote("dave"), vote("erin"), vote("carol"))
    policy = Policy.from_yaml(POLICY.replace("security: [carol, dave]",
                                             "security: [carol, dave, erin]"))
    async with Guard(policy, store=store, channels=[channel]) as guard:
        auth = await guard.authorize(ToolCall(tool="iam.update", args={}, principal=AGENT))
    assert auth.outcome == "approved"
    assert set(auth.approvers) == {"dave", "erin"}


async def test_no_channel_means_unreachable(store) -> None:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit) as guard:
        auth = await guard.authorize(call("restart", service="api"))
    assert auth.outcome == "unreachable"
    assert types_of(audit) == ["challenge.created", "challenge.unreachable"]


class BrokenChannel:
    name = "broken"
    verified = True

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        raise ConnectionError("slack is down")
        yield  # pragma: no cover

    async def settled(self, request: ApprovalRequest) -> None:
        return None


async def test_failing_channel_is_unreachable_not_allowed(store) -> None:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[BrokenChannel()]) as guard:
        auth = await guard.authorize(call("restart", service="api"))
    assert auth.outcome == "unreachable"
    assert "slack is down" in audit.events[-1]["detail"]


async def test_approve_for_creates_a_grant_that_never_widens(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("alice", grant_ttl=600))
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[channel]) as guard:
        first = await guard.authorize(call("restart", service="api"))
        assert first.outcome == "approved"
        second = await guard.authorize(call("restart", service="web"))
        assert second.outcome == "approved" and second.approvers == ("alice",)
        assert len(channel.asked) == 1  # covered by the grant
        # A different tool is not covered, even of the same class.
        third = await guard.authorize(call("delete", path="/tmp/x"))
        assert len(channel.asked) == 2 and third.outcome == "approved"
        # The same tool in a more privileged class is not covered either (alice may not
        # approve privileged calls, so it expires).
        fourth = await guard.authorize(call("restart", service="all"))
        assert len(channel.asked) == 3 and fourth.outcome == "expired"
        grants = await guard.store.list_grants()
    assert sorted(g.tool for g in grants) == ["delete", "restart"]
    assert "grant.created" in types_of(audit) and "grant.used" in types_of(audit)


async def test_grant_longer_than_rule_allows_is_refused(store) -> None:
    channel = CountingChannel(vote("alice", grant_ttl=7200), vote("bob"))
    async with Guard(Policy.from_yaml(POLICY), store=store, channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service="api"))
        grants = await guard.store.list_grants()
    assert auth.outcome == "approved" and auth.approvers == ("bob",)
    assert grants == []


async def test_shadow_mode_never_blocks_but_audits(store) -> None:
    audit = MemoryAuditLog()
    policy = Policy.from_yaml("mode: shadow\n" + POLICY)
    async with Guard(policy, store=store, audit=audit) as guard:
        auth = await guard.authorize(call("drop_database", name="prod"))
    assert auth.allowed and auth.shadow
    assert audit.events[0]["type"] == "call.shadow" and audit.events[0]["would_be"] == "deny"


async def test_ambiguous_arguments_are_refused_as_invalid_before_any_rule(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("alice"))
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service=float("nan")))
        huge = await guard.authorize(call("restart", service=2**70))
    assert auth.outcome == "invalid" and "NaN" in auth.reason
    assert huge.outcome == "invalid" and "safe range" in huge.reason
    assert [e["type"] for e in audit.events] == ["call.invalid", "call.invalid"]
    assert channel.asked == []


async def test_progress_callback_runs_while_held(store) -> None:
    ticks: list[tuple[float, float]] = []

    async def on_wait(elapsed: float, total: float) -> None:
        ticks.append((elapsed, total))

    channel = CountingChannel(vote("alice"), delay=1.5)
    async with Guard(Policy.from_yaml(POLICY), store=store, channels=[channel]) as guard:
        auth = await guard.authorize(call("restart", service="api"), on_wait=on_wait)
    assert auth.outcome == "approved"
    assert ticks and ticks[0][1] == pytest.approx(2.0)


async def test_concurrent_held_calls_are_independent(store) -> None:
    results: list[str] = []

    def script(request: ApprovalRequest) -> list[ChannelAnswer]:
        return [vote("alice", request.call["args"]["n"] % 2 == 0)]

    async with Guard(Policy.from_yaml(POLICY), store=store,
                     channels=[ScriptedChannel(script)]) as guard:
        async def one(n: int) -> None:
            agent = Principal(f"agent:worker-{n}")
            auth = await guard.authorize(ToolCall(tool="restart", args={"n": n}, principal=agent))
            results.append(auth.outcome)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(one, n)
    assert sorted(results) == ["approved"] * 10 + ["denied"] * 10


async def test_edited_arguments_are_a_new_call_decided_afresh(store) -> None:
    audit = MemoryAuditLog()

    def script(request: ApprovalRequest) -> list[ChannelAnswer]:
        if request.call["args"]["service"] == "all":
            # Narrow the blast radius instead of approving "restart everything".
            return [ChannelAnswer(kind="vote", channel="scripted", approver="dave",
                                  approve=False, edited_args={"service": "api"})]
        return [vote("alice")]

    policy = Policy.from_yaml(POLICY)
    async with Guard(policy, store=store, audit=audit,
                     channels=[ScriptedChannel(script)]) as guard:
        auth = await guard.authorize(call("restart", service="all"))
    assert auth.outcome == "approved"
    assert dict(auth.call.args) == {"service": "api"}
    assert auth.rule_id == "restart"  # re-classified: destructive now, not privileged
    assert types_of(audit) == ["challenge.created", "challenge.edited", "challenge.created",
                               "call.executed"]


async def test_approval_flood_is_collapsed_limited_and_audited(store) -> None:
    audit = MemoryAuditLog()
    channel = CountingChannel(vote("alice"), delay=0.5)
    policy = Policy.from_yaml(POLICY.replace(
        "deny_cooldown: 1m}",
        "deny_cooldown: 1m, pending_per_class: 1, request_rate: {max: 3, per: 1h}}"))
    async with Guard(policy, store=store, audit=audit, channels=[channel]) as guard:
        outcomes: list[str] = []

        async def one(n: int) -> None:
            outcomes.append((await guard.authorize(call("restart", n=n % 3))).outcome)

        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(one, n)
        # One request per principal and class at a time: a human saw one, not twelve.
        assert len(channel.asked) == 1
        assert sorted(outcomes) == ["approved"] + ["denied"] * 11
        # Later calls go through one at a time, until the rate limit stops them.
        later = [(await guard.authorize(call("restart", n=10 + i))).outcome for i in range(3)]
    assert later == ["approved", "approved", "denied"]
    # Identical calls joined the one request (one ran on the approval, three were told it
    # was used); the eight distinct ones met the pending limit, the last the rate limit.
    used = [e for e in audit.events if e.get("detail") == "approval already used"]
    assert len(used) == 3
    floods = [e for e in audit.events if e["type"] == "signal.flood"]
    assert len(floods) == 9
    assert sum("already wait" in e["detail"] for e in floods) == 8
    assert "within 3600s (limit 3)" in floods[-1]["detail"]
