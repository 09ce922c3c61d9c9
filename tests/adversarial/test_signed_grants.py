""""Approve for N" under ``assurance: signed``: a grant is only as good as its signatures.

Written as the agent: same OS user, same store. A grant row proves nothing by itself, so the
guard uses a signed rule's grant only when it carries the approvers' signed votes (which name
the rule, its settings, the grant asked for and the view they were shown) and they verify
again against the trust file. Rows the agent writes, copies or edits cover nothing; the real
grant covers the same rule, caller and human, for as long as the approvers signed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentguard import Guard, load_policy
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.store.base import Store
from agentguard.trust import generate_key
from agentguard.trust.keys import public_key_text
from agentguard.types import CallContext, Grant, Principal, ToolCall
from tests.adversarial.test_signed_votes import Mailbox
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = pytest.mark.anyio

POLICY = """
trust: trust.yaml
defaults: {timeout: 1h}
classes:
  read: {require: allow}
  privileged: {require: approve, approvers: [dave, erin], quorum: 2, max_grant: 1h,
               separation_of_duties: true, assurance: signed}
rules:
  - {id: rotate, match: {tool: rotate_credentials}, class: privileged}
  - {id: purge, match: {tool: purge_cache}, class: privileged}
"""


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The guard on SQLite and on PostgreSQL (the grant row, receipts included, round-trips
    through each store)."""
    if request.param == "sqlite":
        yield _world(tmp_path, SQLiteStore(tmp_path / "s.db"), "sqlite")
        return
    request.applymarker(pytest.mark.postgres)
    from agentguard.store.postgres import PostgresStore

    dsn = reachable_dsn()
    with fresh_schema(dsn) as schema:
        yield _world(tmp_path, PostgresStore(dsn, schema=schema), "postgres")


def _world(tmp_path: Path, store: Store, kind: str) -> dict[str, Any]:
    keys = {who: generate_key(tmp_path / "keys" / f"{who}.key") for who in ("dave", "erin")}
    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(k.public_key())]} for who, k in keys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit, clock = MemoryAuditLog(), Clock()
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=store,
                  audit=audit, channels=[Mailbox()], clock=clock)
    return {"keys": keys, "guard": guard, "audit": audit, "clock": clock, "kind": kind}


def call(tool: str = "rotate_credentials", account: str = "root",
         principal: str = "agent:ops", acting_for: str = "mallory") -> ToolCall:
    return ToolCall(tool=tool, args={"account": account}, principal=Principal(principal),
                    context=CallContext(acting_for=acting_for))


async def approve_for(setup: dict[str, Any], held: ToolCall,
                      ttls: tuple[float, float] = (900.0, 900.0)) -> str:
    guard = setup["guard"]
    first = await guard.authorize(held, wait=0)
    assert first.outcome == "pending"
    for who, ttl in zip(("dave", "erin"), ttls, strict=True):
        _, problem = await cast_vote(store=guard.store, audit=setup["audit"],
                                     request_id=first.request_id, approver=who, approve=True,
                                     channel="cli", grant_ttl=ttl, key=setup["keys"][who])
        assert problem is None, problem
    run = await guard.authorize(held, wait=0)
    assert run.outcome == "approved", run.reason
    return first.request_id


async def the_grant(setup: dict[str, Any]) -> Grant:
    (grant,) = await setup["guard"].store.list_grants()
    return grant


async def test_a_signed_grant_covers_the_same_rule_caller_and_human_only(
    setup: dict[str, Any],
) -> None:
    guard, audit = setup["guard"], setup["audit"]
    await approve_for(setup, call())
    grant = await the_grant(setup)
    assert len(grant.receipts) == 2 and grant.shown is not None
    later = await guard.authorize(call(account="backup"), wait=0)  # same rule, other args
    assert later.outcome == "approved" and set(later.approvers) == {"dave", "erin"}
    used = [e for e in audit.events if e["type"] == "grant.used"]
    assert len(used) == 1 and len(used[0]["grant_receipts"]) == 2
    executed = [e for e in audit.events if e["type"] == "call.executed"]
    assert executed[-1]["grant_id"] == grant.id and executed[-1]["grant_receipts"]
    for other in (call(principal="agent:other"), call(acting_for="alice"),
                  call(tool="purge_cache")):
        assert (await guard.authorize(other, wait=0)).outcome == "pending", other
    setup["clock"].offset = 901  # the signed 15 minutes ran out
    assert (await guard.authorize(call(account="x"), wait=0)).outcome == "pending"
    # audit verify --trust re-checks the grant's receipts in the record of the covered run
    from agentguard.audit.receipts import check_receipts

    assert check_receipts(audit.events, guard.policy.trust) == []
    forged = dict(executed[-1], grant_receipts=executed[-1]["grant_receipts"][:1])
    assert [p.kind for p in check_receipts([forged], guard.policy.trust)] == [
        "receipt_mismatch"]


async def test_grant_rows_the_agent_writes_copies_or_edits_cover_nothing(
    setup: dict[str, Any],
) -> None:
    guard = setup["guard"]
    await approve_for(setup, call())
    real = await the_grant(setup)
    await guard.store.revoke_grant(real.id)
    shown = real.shown
    assert shown is not None
    forged = [
        # no signatures at all
        dataclasses.replace(real, id="g-bare", receipts=(), shown=None),
        # the real signatures, moved to another caller (row and shown view rewritten)
        dataclasses.replace(real, id="g-caller", principal="agent:other",
                            shown={**shown, "call": {**shown["call"], "principal": "agent:other"}}),
        # ... to another human
        dataclasses.replace(real, id="g-human", acting_for="alice", shown={
            **shown, "call": {**shown["call"], "context": {
                **shown["call"]["context"], "acting_for": "alice"}}}),
        # ... to another rule of the same class
        dataclasses.replace(real, id="g-rule", rule_id="purge", tool="purge_cache"),
        # ... the row's expiry pushed out (the signed 15 minutes are what counts)
        dataclasses.replace(real, id="g-longer", expires_at=real.expires_at + 86400),
    ]
    for row in forged:
        await guard.store.add_grant(row)
    setup["clock"].offset = 901  # only g-longer's row still looks alive to the store
    for attempt in (call(principal="agent:other", account="a"),
                    call(acting_for="alice", account="b"),
                    call(tool="purge_cache", account="c"), call(account="d")):
        outcome = (await guard.authorize(attempt, wait=0)).outcome
        assert outcome == "pending", (attempt, outcome)
    setup["clock"].offset = 0  # even within the signed time, the copies cover nothing
    for attempt in (call(principal="agent:other", account="e"),
                    call(acting_for="alice", account="f"),
                    call(tool="purge_cache", account="g")):
        outcome = (await guard.authorize(attempt, wait=0)).outcome
        assert outcome == "pending", (attempt, outcome)
    for row in forged:
        await guard.store.revoke_grant(row.id)
    # one approver's signature only (quorum 2), for the very caller and human
    await guard.store.add_grant(dataclasses.replace(real, id="g-half",
                                                    receipts=real.receipts[:1]))
    half = await guard.authorize(call(account="h"), wait=0)
    assert half.outcome != "approved", half.reason  # held (or refused by flood control)
    assert not any(e["type"] == "grant.used" for e in setup["audit"].events)


async def test_no_grant_unless_every_counted_approver_signed_one(
    setup: dict[str, Any],
) -> None:
    """dave approves for 15 minutes, erin for this call only: the call runs, no grant; and
    her single-use signatures pasted into a grant row cover nothing."""
    guard = setup["guard"]
    await approve_for(setup, call(), ttls=(900.0, 0.0))
    assert await guard.store.list_grants() == []
    await approve_for(setup, call(account="second"), ttls=(0.0, 0.0))
    assert await guard.store.list_grants() == []


async def test_a_grant_from_once_only_votes_pasted_into_a_row_covers_nothing(
    setup: dict[str, Any],
) -> None:
    guard = setup["guard"]
    await approve_for(setup, call())  # a real grant, to borrow the row's shape
    real = await the_grant(setup)
    await guard.store.revoke_grant(real.id)
    rid = (await guard.authorize(call(account="once"), wait=0)).request_id
    for who in ("dave", "erin"):
        await cast_vote(store=guard.store, audit=setup["audit"], request_id=rid, approver=who,
                        approve=True, channel="cli", key=setup["keys"][who])
    stored = await guard.store.get_request(rid)
    assert stored is not None
    from agentguard.approvals import shown_view

    await guard.store.add_grant(dataclasses.replace(
        real, id="g-once", receipts=tuple(v.receipt for v in stored.votes if v.receipt),
        shown=shown_view(stored)))
    assert (await guard.authorize(call(account="other"), wait=0)).outcome == "pending"


async def test_approve_for_15m_on_the_cli_with_each_approvers_key(tmp_path: Path) -> None:
    """The real CLI, each approver with their own key: `approvals approve ID --for 15m`."""
    import anyio

    setup = _world(tmp_path, SQLiteStore(tmp_path / "s.db"), "sqlite")

    from tests.adversarial.helpers import cli

    guard = setup["guard"]
    first = await guard.authorize(call(), wait=0)
    for who in ("dave", "erin"):
        out = await anyio.to_thread.run_sync(lambda w=who: cli(
            "approvals", "approve", first.request_id, "--for", "15m", "--as", w,
            "--store", f"sqlite:///{tmp_path / 's.db'}",
            "--audit", str(tmp_path / f"{w}.jsonl"), home=tmp_path / w,
            env={"AGENTGUARD_APPROVER_KEY": str(tmp_path / "keys" / f"{w}.key")}))
        assert out.returncode == 0, out.stderr
    assert (await guard.authorize(call(), wait=0)).outcome == "approved"
    grant = await the_grant(setup)
    assert len(grant.receipts) == 2
    later = await guard.authorize(call(account="backup"), wait=0)
    assert later.outcome == "approved" and later.request_id is None
