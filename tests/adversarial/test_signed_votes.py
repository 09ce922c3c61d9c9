"""Signed approvals (issue 14, first part): the agent, running as the same OS user with the
same store, tries to approve its own held call. Under ``assurance: signed`` only votes signed
by a key the trust file lists count, over a statement naming this request, this call's hash,
this rule and its approval settings; the store's "approved" proves nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentguard import Guard, Policy
from agentguard.approvals import cast_vote, shown_hash, shown_view
from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.store.base import Store
from agentguard.trust import VoteStatement, generate_key, sign
from agentguard.trust.keys import public_key_text
from agentguard.types import ApprovalVote, CallContext, Principal, ToolCall
from tests.adversarial.helpers import cli
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = pytest.mark.anyio

POLICY = """
trust: trust.yaml
defaults: {timeout: 1h}
classes:
  read: {require: allow}
  privileged: {require: approve, approvers: [dave, erin], quorum: 2,
               separation_of_duties: true, assurance: signed}
rules: [{id: rotate, match: {tool: rotate_credentials}, class: privileged}]
"""


class Mailbox:
    """A channel that presents a request and lets the store carry every answer."""

    name = "terminal"
    verified = True

    async def present(self, request: Any) -> str | None:
        return None

    async def ask(self, request: Any) -> AsyncIterator[Any]:
        await anyio.sleep_forever()
        yield None  # pragma: no cover

    async def settled(self, request: Any) -> None:
        return None


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    keys = {who: generate_key(tmp_path / "keys" / f"{who}.key") for who in ("dave", "erin")}
    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(k.public_key())]} for who, k in keys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {"keys": keys, "dir": tmp_path}


def rotate() -> ToolCall:
    return ToolCall(tool="rotate_credentials", args={"account": "root"},
                    principal=Principal("agent:ops"), context=CallContext(acting_for="mallory"))


def guard_for(setup: dict[str, Any], store: Store, audit: MemoryAuditLog) -> Guard:
    from agentguard import load_policy

    return Guard(load_policy(setup["dir"] / "policy.yaml"), store=store, audit=audit,
                 channels=[Mailbox()])


async def held(guard: Guard) -> str:
    first = await guard.authorize(rotate(), wait=0)
    assert first.outcome == "pending" and first.request_id
    return first.request_id


async def test_approvers_with_their_own_keys_approve_and_the_receipts_are_audited(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    guard = guard_for(setup, SQLiteStore(tmp_path / "s.db"), audit)
    rid = await held(guard)
    for who in ("dave", "erin"):
        _, problem = await cast_vote(store=guard.store, audit=audit, request_id=rid,
                                     approver=who, approve=True, channel="cli",
                                     key=setup["keys"][who])
        assert problem is None
    run = await guard.authorize(rotate(), wait=0)
    assert run.outcome == "approved" and set(run.approvers) == {"dave", "erin"}
    executed = next(e for e in audit.events if e["type"] == "call.executed")
    assert len(executed["receipts"]) == 2


async def test_approving_as_someone_else_on_the_cli_is_refused(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 's.db'}"
    guard = guard_for(setup, SQLiteStore(tmp_path / "s.db"), MemoryAuditLog())
    rid = await held(guard)
    for who in ("dave", "erin"):  # the agent's own process, no approver's key
        out = await anyio.to_thread.run_sync(lambda w=who: cli(
            "approvals", "approve", rid, "--as", w, "--store", store_url,
            home=tmp_path / "agent-home", env={"HOME": str(tmp_path / "agent-home")}))
        assert out.returncode != 0 and b"needs a signed vote" in out.stderr
    assert (await guard.authorize(rotate(), wait=0)).outcome == "pending"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield SQLiteStore(tmp_path / "s.db")
        return
    request.applymarker(pytest.mark.postgres)
    from agentguard.store.postgres import PostgresStore

    dsn = reachable_dsn()
    with fresh_schema(dsn) as schema:
        yield PostgresStore(dsn, schema=schema)


async def test_vote_rows_written_straight_into_the_store_run_nothing(
    setup: dict[str, Any], store: Store
) -> None:
    audit = MemoryAuditLog()
    async with guard_for(setup, store, audit) as guard:
        rid = await held(guard)
        now = time.time()
        for who in ("dave", "erin"):  # the agent writes the rows itself
            await store.record_vote(rid, ApprovalVote(approver=who, approve=True, at=now,
                                                      channel="cli"))
        assert (await store.get_request(rid)).status == "approved"  # type: ignore[union-attr]
        refused = await guard.authorize(rotate(), wait=0)
    assert refused.outcome == "denied" and "signed" in refused.reason
    assert not any(e["type"] == "call.executed" for e in audit.events)
    unverified = [e for e in audit.events if e["type"] == "challenge.unverified"]
    assert len(unverified) == 1 and "not signed" in unverified[0]["detail"]


async def test_forged_and_replayed_signatures_count_for_nothing(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    guard = guard_for(setup, SQLiteStore(tmp_path / "s.db"), audit)
    rid = await held(guard)
    request = await guard.store.get_request(rid)
    assert request is not None
    agent_key = generate_key(tmp_path / "agent" / "own.key")  # not in the trust file
    other = VoteStatement.for_vote(request_id="req_another", call_hash=request.call_hash,
                                   rule_id=request.rule_id,
                                   settings_hash=request.settings_hash, approve=True,
                                   approver="erin", at=time.time(),
                                   shown_hash=shown_hash(shown_view(request)))
    forged = [
        ("dave", sign(VoteStatement.for_vote(
            request_id=rid, call_hash=request.call_hash, rule_id=request.rule_id,
            settings_hash=request.settings_hash, approve=True, approver="dave",
            at=time.time(), shown_hash=shown_hash(shown_view(request))), agent_key)),
        ("erin", sign(other, setup["keys"]["erin"])),  # erin's real signature, other request
    ]
    for who, signed in forged:
        await guard.store.record_vote(rid, ApprovalVote(
            approver=who, approve=True, at=time.time(), channel="cli",
            receipt=signed.to_dict()))
    refused = await guard.authorize(rotate(), wait=0)
    assert refused.outcome == "denied"
    detail = next(e for e in audit.events if e["type"] == "challenge.unverified")["detail"]
    assert "not in the trust file" in detail and "another request" in detail


async def test_one_approver_cannot_meet_a_two_person_quorum_alone(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    guard = guard_for(setup, SQLiteStore(tmp_path / "s.db"), audit)
    rid = await held(guard)
    request = await guard.store.get_request(rid)
    assert request is not None
    statement = VoteStatement.for_vote(
        request_id=rid, call_hash=request.call_hash, rule_id=request.rule_id,
        settings_hash=request.settings_hash, approve=True, approver="dave", at=time.time(),
        shown_hash=shown_hash(shown_view(request)))
    receipt = sign(statement, setup["keys"]["dave"]).to_dict()
    for spelling in ("dave", "user:erin"):  # dave's one signature, filed twice
        await guard.store.record_vote(rid, ApprovalVote(approver=spelling, approve=True,
                                                        at=time.time(), channel="cli",
                                                        receipt=receipt))
    assert (await guard.authorize(rotate(), wait=0)).outcome == "denied"


def test_a_signed_rule_without_a_trust_file_does_not_load() -> None:
    from agentguard.errors import PolicyError

    with pytest.raises(PolicyError, match="trust"):
        Policy.from_yaml(POLICY.replace("trust: trust.yaml\n", ""))


@pytest.fixture
def fake_slack() -> Iterator[Any]:
    from tests.channels.slack.fake_slack import FakeSlack

    with FakeSlack() as fake:
        yield fake


SLACK_POLICY = """
trust: trust.yaml
defaults: {timeout: 30s}
classes:
  read: {require: allow}
  destructive: {require: approve, approvers: ["slack:UALICE"], assurance: signed}
rules: [{id: restart, match: {tool: restart}, class: destructive}]
"""


@pytest.mark.parametrize("serve_signs", [True, False])
async def test_a_slack_click_counts_under_signed_assurance_only_when_serve_signs_it(
    tmp_path: Path, fake_slack: Any, serve_signs: bool
) -> None:
    from agentguard import load_policy
    from agentguard.channels.slack import SlackChannel, SlackInteractions
    from agentguard.channels.slack.blocks import ACTION_APPROVE
    from agentguard.store import MemoryStore
    from tests.channels.slack.fake_slack import buttons, serving
    from tests.channels.slack.harness import Harness, settings_for

    service = generate_key(tmp_path / "serve" / "serve.key")
    trust = {"version": 1, "approvers": [], "services": [
        {"name": "serve", "key": public_key_text(service.public_key()),
         "may_vouch_for": ["slack:*"]}]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(SLACK_POLICY)
    settings = settings_for(fake_slack)
    store, audit = MemoryStore(), MemoryAuditLog()
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=store, audit=audit,
                  channels=[SlackChannel(settings)])
    interactions = SlackInteractions.from_settings(
        settings, store=store, audit=audit, key=service if serve_signs else None)
    async with guard, serving(interactions.app()) as base:
        harness = Harness(fake_slack, store, audit, guard, interactions,
                          base + "/slack/interactions")
        call = ToolCall(tool="restart", args={"service": "api"}, principal=Principal("agent:a"))
        box: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            async def run() -> None:
                box["auth"] = await guard.authorize(call, wait=3)
            tg.start_soon(run)
            post = (await fake_slack.wait("chat.postMessage", 1))[0]
            request_id = buttons(post)[ACTION_APPROVE]
            assert await harness.click("UALICE", ACTION_APPROVE, request_id,
                                       ts=post["response"]["ts"]) == 200
    auth = box["auth"]
    if serve_signs:
        assert auth.outcome == "approved" and auth.approvers == ("slack:ualice",)
        executed = next(e for e in audit.events if e["type"] == "call.executed")
        assert executed["receipts"][0]["statement"]["approver"] == "slack:ualice"
    else:  # serve without its key: Slack's signature alone does not meet signed assurance
        assert auth.outcome == "pending"
        rejected = [e for e in audit.events if e["type"] == "vote.rejected"]
        assert not any(e["type"] == "call.executed" for e in audit.events)
        assert len(rejected) == 1 and "needs a signed vote" in rejected[0]["detail"]


async def test_an_approver_never_signs_a_call_the_store_rewrote_under_its_hash(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """The agent holds ``rotate_credentials(account="root")``, then rewrites the stored call
    an approver reads to ``account="sandbox"``, keeping the call hash its vote would sign.
    Both approvers read the harmless version and approve with their own keys; nothing counts,
    both attempts are audited, and ``approvals show`` says the stored call was altered."""
    import sqlite3

    from agentguard.audit import JsonlAuditLog

    db = tmp_path / "s.db"
    guard = guard_for(setup, SQLiteStore(db), MemoryAuditLog())
    rid = await held(guard)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE requests SET doc = json_set(doc, '$.call.args.account', 'sandbox')"
                     " WHERE id = ?", (rid,))
    shown = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "show", rid, "--store", f"sqlite:///{db}", home=tmp_path / "dave"))
    assert b"sandbox" in shown.stdout and b"does not match its call hash" in shown.stderr
    audit = JsonlAuditLog(tmp_path / "approver-audit.jsonl")
    for who in ("dave", "erin"):
        request, problem = await cast_vote(store=guard.store, audit=audit, request_id=rid,
                                           approver=who, approve=True, channel="cli",
                                           key=setup["keys"][who])
        assert problem is not None and "does not match its call hash" in problem
        assert request is not None and request.votes == ()
    audit.close()
    rejected = [line for line in (tmp_path / "approver-audit.jsonl").read_text().splitlines()
                if '"vote.rejected"' in line]
    assert len(rejected) == 2
    assert (await guard.authorize(rotate(), wait=0)).outcome == "pending"
