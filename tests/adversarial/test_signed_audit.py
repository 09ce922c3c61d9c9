"""Receipts in the audit log (issue 14): the agent, which writes the log through its own guard
and can therefore re-hash the whole chain, rewrites or forges the record that says who approved
its call. The chain then verifies clean; ``audit verify --trust`` re-checks every receipt
against the trust anchors and catches each forgery."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentguard import Guard, load_policy
from agentguard.approvals import cast_vote
from agentguard.audit import JsonlAuditLog, verify_log
from agentguard.audit._chain import encode
from agentguard.audit.anchored import verify_anchored
from agentguard.audit.jsonl import format_head
from agentguard.store import SQLiteStore
from agentguard.trust import TrustAnchors, VoteStatement, generate_key, sign
from agentguard.trust.keys import public_key_text
from agentguard.types import CallContext, Principal, ToolCall
from tests.adversarial.helpers import cli
from tests.adversarial.test_signed_votes import POLICY, Mailbox


def rotate(account: str = "root") -> ToolCall:
    return ToolCall(tool="rotate_credentials", args={"account": account},
                    principal=Principal("agent:ops"), context=CallContext(acting_for="mallory"))


@pytest.fixture
def approved(tmp_path: Path) -> dict[str, Any]:
    """A real signed approval by dave and erin, run and audited to a JSONL log."""
    return anyio.run(_approved, tmp_path)


async def _approved(tmp_path: Path) -> dict[str, Any]:
    keys = {who: generate_key(tmp_path / "keys" / f"{who}.key") for who in ("dave", "erin")}
    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(k.public_key())]} for who, k in keys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    log_path = tmp_path / "audit.jsonl"
    audit = JsonlAuditLog(log_path)
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=SQLiteStore(tmp_path / "s.db"),
                  audit=audit, channels=[Mailbox()])
    first = await guard.authorize(rotate(), wait=0)
    for who in ("dave", "erin"):
        _, problem = await cast_vote(store=guard.store, audit=audit, request_id=first.request_id,
                                     approver=who, approve=True, channel="cli", key=keys[who])
        assert problem is None
    assert (await guard.authorize(rotate(), wait=0)).outcome == "approved"
    audit.close()
    return {"log": log_path, "trust": TrustAnchors.from_mapping(trust), "dir": tmp_path,
            "keys": keys, "guard": guard}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def rechain(path: Path, rows: list[dict[str, Any]]) -> None:
    """What the agent can do: rewrite records and re-hash the whole chain and its head."""
    prev, out = "0" * 64, b""
    for seq, row in enumerate(rows, start=1):
        body = {k: v for k, v in row.items() if k != "hash"} | {"seq": seq, "prev_hash": prev}
        raw = encode(body)
        prev = hashlib.sha256(raw).hexdigest()
        out += raw[:-1] + b',"hash":"' + prev.encode() + b'"}\n'
    path.write_bytes(out)
    Path(f"{path}.head").write_bytes(format_head(len(rows), prev, len(out)))


def executed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["type"] == "call.executed")


def kinds(report: Any) -> set[str]:
    return {p.kind for p in report.problems if p.severity == "error"}


def test_the_genuine_log_verifies_with_its_receipts(approved: dict[str, Any]) -> None:
    report = verify_anchored(approved["log"], approved["trust"])
    assert report.ok, report.problems
    assert len(executed(records(approved["log"]))["receipts"]) == 2


def test_a_rewritten_approval_record_is_caught(approved: dict[str, Any]) -> None:
    rows = records(approved["log"])
    row = executed(rows)
    # The agent swaps the approved call for another (new args, new call hash) and keeps
    # dave's and erin's signatures.
    row["args"] = {"account": "admin"}
    row["call_hash"] = hashlib.sha256(b"another call").hexdigest()
    rechain(approved["log"], rows)
    assert verify_log(approved["log"]).ok  # the chain alone cannot tell
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and "receipt_invalid" in kinds(report)


def test_a_receipt_edited_to_name_the_other_call_does_not_verify(
    approved: dict[str, Any]
) -> None:
    rows = records(approved["log"])
    row = executed(rows)
    new_hash = hashlib.sha256(b"another call").hexdigest()
    row["call_hash"] = new_hash
    for receipt in row["receipts"]:
        receipt["statement"]["call_hash"] = new_hash  # the signature no longer covers it
    rechain(approved["log"], rows)
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and "receipt_invalid" in kinds(report)


def test_an_approver_added_to_the_record_without_a_receipt_is_caught(
    approved: dict[str, Any]
) -> None:
    rows = records(approved["log"])
    executed(rows)["approvers"].append("carol")
    rechain(approved["log"], rows)
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and "receipt_mismatch" in kinds(report)


def test_a_forged_record_with_a_valid_chain_and_no_receipt_is_caught(
    approved: dict[str, Any]
) -> None:
    # Appended through a real writer: the chain and head are perfect.
    row = executed(records(approved["log"]))
    with JsonlAuditLog(approved["log"]) as log:
        log.append({k: v for k, v in row.items()
                    if k not in ("seq", "at", "prev_hash", "hash", "receipts")}
                   | {"request_id": "forged", "args": {"account": "everyone"}})
    assert verify_log(approved["log"]).ok
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and kinds(report) == {"unsigned"}
    relaxed = verify_anchored(approved["log"], approved["trust"], allow_unsigned=True)
    assert relaxed.ok and any(p.kind == "unsigned" for p in relaxed.problems)


def test_a_forged_record_reusing_the_real_receipts_is_caught(approved: dict[str, Any]) -> None:
    row = executed(records(approved["log"]))
    with JsonlAuditLog(approved["log"]) as log:  # the same approval "ran" twice
        log.append({k: v for k, v in row.items() if k not in ("seq", "at", "prev_hash", "hash")})
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and kinds(report) == {"receipt_reused"}


def test_a_record_signed_with_the_agents_own_key_is_caught(
    approved: dict[str, Any], tmp_path: Path
) -> None:
    rows = records(approved["log"])
    row = executed(rows)
    mine = generate_key(tmp_path / "agent.key")
    forged = VoteStatement.from_dict(row["receipts"][0]["statement"])
    row["receipts"][0] = sign(forged, mine).to_dict()
    rechain(approved["log"], rows)
    report = verify_anchored(approved["log"], approved["trust"])
    assert not report.ok and "receipt_invalid" in kinds(report)
    assert any("not in the trust file" in p.detail for p in report.problems)


def test_cli_verify_with_the_policys_trust_file(approved: dict[str, Any]) -> None:
    log, policy = str(approved["log"]), str(approved["dir"] / "policy.yaml")
    home = approved["dir"] / "home"
    good = cli("audit", "verify", log, "--policy", policy, home=home)
    assert good.returncode == 0 and b"receipts intact" in good.stdout
    rows = records(approved["log"])
    executed(rows)["approvers"] = ["dave"]
    rechain(approved["log"], rows)
    assert cli("audit", "verify", log, home=home).returncode == 0  # the chain is whole
    bad = cli("audit", "verify", log, "--trust", str(approved["dir"] / "trust.yaml"),
              home=home)
    assert bad.returncode == 1 and b"receipt_mismatch" in bad.stderr


# ------------------------------------------------------------------ grant rows (issue 14)
async def _forge_grants(tmp_path: Path, policy_text: str) -> str:
    """The agent writes grant rows that match its held call exactly (ttl and once), then
    asks again; returns the outcome."""
    import time

    from agentguard.audit import MemoryAuditLog
    from agentguard.canonical import call_hash
    from agentguard.types import Grant

    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(generate_key(tmp_path / "keys" / f"{who}.key")
                                             .public_key())]}
        for who in ("dave", "erin")]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(policy_text)
    store = SQLiteStore(tmp_path / "s.db")
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=store, audit=MemoryAuditLog(),
                  channels=[Mailbox()])
    first = await guard.authorize(rotate(), wait=0)
    held = await store.get_request(first.request_id)
    assert held is not None
    now = time.time()
    for scope, digest in (("ttl", None), ("once", call_hash(rotate()))):
        await store.add_grant(Grant(
            id=f"forged-{scope}", scope=scope, principal="agent:ops", server=rotate().server,
            tool="rotate_credentials", max_rank=99, expires_at=now + 3600,
            granted_by="dave,erin", call_hash=digest, created_at=now, rule_id=held.rule_id,
            settings_hash=held.settings_hash, acting_for="mallory",
            request_id=first.request_id))
    again = await guard.authorize(rotate(), wait=0)
    return again.outcome


def test_a_grant_row_written_by_the_agent_covers_nothing_under_signed_assurance(
    tmp_path: Path
) -> None:
    assert anyio.run(_forge_grants, tmp_path, POLICY) == "pending"
    # Control: the very same rows do cover the call when the rule does not ask for signatures
    # (so the forged rows are well-formed, and it is the assurance level that refuses them).
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir(mode=0o700)
    assert anyio.run(_forge_grants, unsigned,
                     POLICY.replace(", assurance: signed", "")) == "approved"


# ------------------------------------------------------------------ in-process channels
async def _in_process_votes(tmp_path: Path) -> Any:
    """A verified in-process channel (like the console) answers "approve" as dave and erin."""
    from agentguard.audit import MemoryAuditLog
    from agentguard.channels.scripted import ScriptedChannel

    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(generate_key(tmp_path / "keys" / f"{who}.key")
                                             .public_key())]} for who in ("dave", "erin")]}))
    (tmp_path / "policy.yaml").write_text(POLICY)
    channel = ScriptedChannel([ScriptedChannel.vote("dave"), ScriptedChannel.vote("erin")])
    channel.verified = True  # type: ignore[attr-defined]
    audit = MemoryAuditLog()
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=SQLiteStore(tmp_path / "s.db"),
                  audit=audit, channels=[channel])
    return await guard.authorize(rotate(), wait=2), audit.events


def test_an_in_process_channel_cannot_approve_a_signed_rule(tmp_path: Path) -> None:
    result, events = anyio.run(_in_process_votes, tmp_path)
    assert result.outcome != "approved"
    assert not any(e["type"] == "call.executed" for e in events)
    rejected = [e for e in events if e["type"] == "vote.rejected"]
    assert len(rejected) == 2 and all("needs a signed vote" in str(e) for e in rejected)
