"""A signed vote names what its approver was shown (``shown_hash``), and the guard checks it.

Written as the agent: same OS user, same store. The store holds redacted calls with masked
values, so nobody outside the guard can check them against their call hash; and the context an
approver reads (acting for, source) is not in the call hash at all. The agent rewrites what the
approvers read; they approve with their own keys; the guard, which rebuilds what it stored
from the real call, counts none of those votes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentguard import Guard, load_policy
from agentguard.approvals import cast_vote, redacted_view, shown_hash, shown_view
from agentguard.audit import JsonlAuditLog, MemoryAuditLog
from agentguard.audit.receipts import check_receipts
from agentguard.store import SQLiteStore
from agentguard.trust import VoteStatement, generate_key, sign
from agentguard.trust.keys import public_key_text
from agentguard.types import ApprovalVote, CallContext, Principal, ToolCall
from tests.adversarial.helpers import cli
from tests.adversarial.test_signed_votes import Mailbox

pytestmark = pytest.mark.anyio

POLICY = """
trust: trust.yaml
defaults: {timeout: 1h}
classes:
  read: {require: allow}
  privileged: {require: approve, approvers: [dave, erin], quorum: 2,
               separation_of_duties: true, assurance: signed}
rules:
  - {id: rotate, match: {tool: rotate_credentials}, class: privileged, redact: [token]}
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    keys = {who: generate_key(tmp_path / "keys" / f"{who}.key") for who in ("dave", "erin")}
    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(k.public_key())]} for who, k in keys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {"keys": keys, "dir": tmp_path, "db": tmp_path / "s.db"}


def rotate() -> ToolCall:
    return ToolCall(tool="rotate_credentials", args={"account": "root", "token": "s3cret"},
                    principal=Principal("agent:ops"), context=CallContext(acting_for="mallory"))


def guard_for(setup: dict[str, Any], audit: MemoryAuditLog) -> Guard:
    return Guard(load_policy(setup["dir"] / "policy.yaml"), store=SQLiteStore(setup["db"]),
                 audit=audit, channels=[Mailbox()])


async def held(guard: Guard) -> str:
    first = await guard.authorize(rotate(), wait=0)
    assert first.outcome == "pending" and first.request_id
    return first.request_id


def rewrite(db: Path, rid: str, path: str, value: str) -> None:
    """The agent edits the stored call an approver will read (a plain UPDATE)."""
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE requests SET doc = json_set(doc, '$.{path}', ?) "
                     "WHERE id = ?", (value, rid))


async def both_approve(guard: Guard, setup: dict[str, Any], rid: str, audit: Any) -> None:
    for who in ("dave", "erin"):
        _, problem = await cast_vote(store=guard.store, audit=audit, request_id=rid,
                                     approver=who, approve=True, channel="cli",
                                     key=setup["keys"][who])
        assert problem is None, problem


async def test_a_redacted_call_is_approved_and_runs_when_nobody_rewrote_it(
    setup: dict[str, Any],
) -> None:
    """Control: the signed votes name the masked call the guard stored, and count."""
    audit = MemoryAuditLog()
    guard = guard_for(setup, audit)
    rid = await held(guard)
    stored = await guard.store.get_request(rid)
    assert stored is not None and stored.call["args"]["token"] != "s3cret"
    assert "checks that your signed vote" in (redacted_view(stored) or "")
    await both_approve(guard, setup, rid, audit)
    run = await guard.authorize(rotate(), wait=0)
    assert run.outcome == "approved", run.reason
    executed = next(e for e in audit.events if e["type"] == "call.executed")
    assert {r["statement"]["shown_hash"] for r in executed["receipts"]} == {
        shown_hash(shown_view(stored))}


@pytest.mark.parametrize("path, value", [
    ("call.args.account", "sandbox"),       # an unmasked argument of a redacted call
    ("call.context.acting_for", "alice"),   # context: not in the call hash at all
    ("call.context.source_ip", "10.0.0.1"),
    ("privilege", "read"),                  # the class the approver reads it was held as
])
async def test_approvals_of_a_rewritten_call_count_for_nothing(
    setup: dict[str, Any], path: str, value: str,
) -> None:
    """The agent rewrites what approvers read; the call hash cannot tell (the values are
    masked, or the field is context), so both approvers read the harmless version and sign
    it with their own keys. The guard refuses: the votes name another shown call."""
    audit = MemoryAuditLog()
    guard = guard_for(setup, audit)
    rid = await held(guard)
    rewrite(setup["db"], rid, path, value)
    approver_log = MemoryAuditLog()
    await both_approve(guard, setup, rid, approver_log)  # nothing outside the guard can tell
    refused = await guard.authorize(rotate(), wait=0)
    assert not any(e["type"] == "call.executed" for e in audit.events)
    if path == "call.context.acting_for":  # the guard no longer even joins that request
        assert refused.outcome == "pending" and refused.request_id != rid
        return
    assert refused.outcome == "denied", refused.reason
    assert "shown another call" in refused.reason
    assert any(e["type"] == "challenge.unverified" for e in audit.events)


async def test_the_agent_cannot_make_the_guard_accept_its_rewrite_by_re_signing(
    setup: dict[str, Any], tmp_path: Path,
) -> None:
    """The agent's own key over the guard's true shown hash is not in the trust file, and
    an approver's genuine signature over the rewritten view names the wrong hash."""
    audit = MemoryAuditLog()
    guard = guard_for(setup, audit)
    rid = await held(guard)
    stored = await guard.store.get_request(rid)
    assert stored is not None
    true_shown = shown_hash(shown_view(stored))
    agent_key = generate_key(tmp_path / "agent" / "own.key")
    for who, key in (("dave", agent_key), ("erin", agent_key)):
        statement = VoteStatement.for_vote(
            request_id=rid, call_hash=stored.call_hash, rule_id=stored.rule_id,
            settings_hash=stored.settings_hash, approve=True, approver=who,
            at=time.time(), shown_hash=true_shown)
        await guard.store.record_vote(rid, ApprovalVote(
            approver=who, approve=True, at=time.time(), channel="cli",
            receipt=sign(statement, key).to_dict()))
    assert (await guard.authorize(rotate(), wait=0)).outcome == "denied"


async def test_a_version_1_statement_verifies_in_the_audit_but_no_longer_counts(
    setup: dict[str, Any],
) -> None:
    """Votes signed by an older approver tool name nothing shown: the guard refuses them,
    while a receipt of that kind already in an audit log still verifies."""
    audit = MemoryAuditLog()
    guard = guard_for(setup, audit)
    rid = await held(guard)
    stored = await guard.store.get_request(rid)
    assert stored is not None
    receipts = []
    for who in ("dave", "erin"):
        old = VoteStatement(
            request_id=rid, call_hash=stored.call_hash, rule_id=stored.rule_id,
            settings_hash=stored.settings_hash, decision="approve", grant_ttl=0.0,
            at=int(time.time()), approver=who,
            reason_hash=VoteStatement.for_vote(
                request_id="r", call_hash=stored.call_hash, rule_id=None,
                settings_hash=stored.settings_hash, approve=True, approver=who, at=0,
                shown_hash=stored.call_hash).reason_hash)
        assert old.version == 1
        receipt = sign(old, setup["keys"][who]).to_dict()
        receipts.append(receipt)
        await guard.store.record_vote(rid, ApprovalVote(
            approver=who, approve=True, at=time.time(), channel="cli", receipt=receipt))
    refused = await guard.authorize(rotate(), wait=0)
    assert refused.outcome == "denied" and "version-1" in refused.reason
    record = {"type": "call.executed", "request_id": rid, "call_hash": stored.call_hash,
              "rule_id": stored.rule_id, "receipts": receipts, "seq": 1,
              "approvers": ["dave", "erin"]}
    assert check_receipts([record], guard.policy.trust) == [], "old receipts still verify"


async def test_a_call_rewritten_after_it_was_shown_is_not_signed(
    setup: dict[str, Any],
) -> None:
    """`approvals show` prints the shown hash; `approvals approve --shown` refuses (and
    audits) when the store changed between the view and the vote, even for a redacted call
    no call-hash check can cover. The real CLI, as dave with his own key."""
    guard = guard_for(setup, MemoryAuditLog())
    rid = await held(guard)
    home = setup["dir"] / "dave"
    key_env = {"AGENTGUARD_APPROVER_KEY": str(setup["dir"] / "keys" / "dave.key")}
    url = f"sqlite:///{setup['db']}"
    shown = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "show", rid, "--store", url, home=home, env=key_env))
    line = next(x for x in shown.stdout.decode().splitlines() if x.startswith("shown as "))
    seen = line.split()[2]
    rewrite(setup["db"], rid, "call.args.account", "sandbox")
    voted = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "approve", rid, "--shown", seen, "--as", "dave", "--store", url,
        "--audit", str(setup["dir"] / "dave-audit.jsonl"), home=home, env=key_env))
    assert voted.returncode != 0 and b"changed since it was shown" in voted.stderr
    request = await guard.store.get_request(rid)
    assert request is not None and request.votes == ()
    log = JsonlAuditLog(setup["dir"] / "dave-audit.jsonl")
    log.close()
    assert '"vote.rejected"' in (setup["dir"] / "dave-audit.jsonl").read_text()


async def test_the_shown_hash_of_show_json_is_the_one_a_vote_names(
    setup: dict[str, Any],
) -> None:
    """A script reads the call with `approvals show --json` and approves exactly that view:
    the JSON's ``shown_hash`` is the text view's, and a rewrite after it is refused."""
    guard = guard_for(setup, MemoryAuditLog())
    rid = await held(guard)
    home = setup["dir"] / "dave"
    key_env = {"AGENTGUARD_APPROVER_KEY": str(setup["dir"] / "keys" / "dave.key")}
    url = f"sqlite:///{setup['db']}"
    as_json = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "show", rid, "--json", "--store", url, home=home, env=key_env))
    text = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "show", rid, "--store", url, home=home, env=key_env))
    seen = json.loads(as_json.stdout)["shown_hash"]
    line = next(x for x in text.stdout.decode().splitlines() if x.startswith("shown as "))
    assert seen.startswith(line.split()[2]) and len(seen) == 64
    rewrite(setup["db"], rid, "call.args.account", "sandbox")
    voted = await anyio.to_thread.run_sync(lambda: cli(
        "approvals", "approve", rid, "--shown", seen, "--as", "dave", "--store", url,
        "--audit", str(setup["dir"] / "dave-audit.jsonl"), home=home, env=key_env))
    assert voted.returncode != 0 and b"changed since it was shown" in voted.stderr
