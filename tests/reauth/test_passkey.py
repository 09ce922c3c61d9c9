"""Passkey step-up (``reauth: {method: passkey}``): the real guard, a trust file listing carol's
passkey, and assertions made by a software authenticator (the same verifier is checked against
Chromium's virtual authenticator in tests/web). The agent tries its own passkey, another
person's, an assertion for another call, a replay, and one without user verification."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentguard import Guard, load_policy
from agentguard.audit import MemoryAuditLog
from agentguard.canonical import call_hash
from agentguard.reauth.passkey import PasskeyReauthenticator, ReauthStatement
from agentguard.store import SQLiteStore
from agentguard.trust import TrustAnchors, VoteStatement
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall

pytest.importorskip("webauthn")
from agentguard.testing.passkey import SoftPasskey

POLICY = """
trust: trust.yaml
classes:
  read: {require: allow}
  privileged: {require: reauth, reauth: {method: passkey}}
rules: [{id: reset, match: {tool: reset_password}, class: privileged}]
"""


def reset(account: str = "carol") -> ToolCall:
    return ToolCall(tool="reset_password", args={"account": account},
                    principal=Principal("agent:helpdesk"), context=CallContext(acting_for="carol"))


Asker = Callable[[str, ApprovalRequest, ReauthStatement, Any], Any]


def run(tmp_path: Path, ask: Asker, call: ToolCall | None = None) -> tuple[Any, list[dict]]:
    keys = {"carol": SoftPasskey(label="carol"), "dave": SoftPasskey(label="dave")}
    trust = {"version": 1, "approvers": [
        {"id": who, "passkeys": [k.anchor()]} for who, k in keys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit = MemoryAuditLog()

    async def main() -> Any:
        async def asker(subject: str, request: ApprovalRequest, statement: ReauthStatement,
                        passkeys: Any) -> Any:
            return ask(subject, request, statement, keys)

        reauth = PasskeyReauthenticator(TrustAnchors.from_mapping(trust), asker,
                                        max_attempts=1)
        guard = Guard(load_policy(tmp_path / "policy.yaml"),
                      store=SQLiteStore(tmp_path / "s.db"), audit=audit,
                      reauthenticators={"passkey": reauth})
        return await guard.authorize(call or reset())

    return anyio.run(main), audit.events


def test_carols_passkey_over_this_call_passes_the_step_up(tmp_path: Path) -> None:
    seen: list[ReauthStatement] = []

    def ask(subject: str, request: ApprovalRequest, statement: ReauthStatement,
            keys: dict[str, SoftPasskey]) -> Any:
        seen.append(statement)
        return keys["carol"].assert_(statement.digest())

    result, events = run(tmp_path, ask)
    assert result.outcome == "approved", result.reason
    assert seen[0].subject == "carol" and seen[0].call_hash == call_hash(reset())
    assert any(e["type"] == "reauth.verified" and e["method"] == "passkey" for e in events)


@pytest.mark.parametrize("attack", [
    "agents_own_passkey", "daves_passkey", "another_call", "replay", "no_user_verification",
    "vote_domain", "another_origin",
])
def test_the_agent_cannot_pass_carols_passkey_step_up(tmp_path: Path, attack: str) -> None:
    mine = SoftPasskey(label="agent")
    earlier: list[dict[str, Any]] = []

    def ask(subject: str, request: ApprovalRequest, statement: ReauthStatement,
            keys: dict[str, SoftPasskey]) -> Any:
        carol = keys["carol"]
        if attack == "agents_own_passkey":
            forged = mine.assert_(statement.digest())
            return forged | {"id": carol.credential_id, "rawId": carol.credential_id}
        if attack == "daves_passkey":
            return keys["dave"].assert_(statement.digest())
        if attack == "another_call":
            other = ReauthStatement(statement.request_id, "0" * 64, statement.subject,
                                    statement.at)
            return carol.assert_(other.digest())
        if attack == "replay":  # carol's genuine assertion from an earlier step-up
            earlier.append(carol.assert_(ReauthStatement(
                statement.request_id, statement.call_hash, statement.subject,
                statement.at - 60).digest()))
            return earlier[0]
        if attack == "no_user_verification":
            return carol.assert_(statement.digest(), user_verified=False)
        if attack == "vote_domain":  # carol's passkey vote on this call is not a step-up
            vote = VoteStatement.for_vote(
                request_id=statement.request_id, call_hash=statement.call_hash,
                rule_id="reset", settings_hash="0" * 64, approve=True, approver="carol",
                at=statement.at, shown_hash="0" * 64)
            return carol.assert_(vote.digest())
        return carol.assert_(statement.digest(), origin="https://evil.example")

    result, events = run(tmp_path, ask)
    assert result.outcome == "reauth_failed", (attack, result.reason)
    assert not any(e["type"] == "call.executed" for e in events)
    assert any(e["type"] == "reauth.failed" for e in events)


def test_nobody_to_ask_fails_closed(tmp_path: Path) -> None:
    result, _ = run(tmp_path, lambda *a: None)
    assert result.outcome == "reauth_failed" and "unreachable" in result.reason


def test_a_subject_without_a_passkey_fails(tmp_path: Path) -> None:
    call = ToolCall(tool="reset_password", args={"account": "x"},
                    principal=Principal("agent:helpdesk"), context=CallContext(acting_for="zed"))
    result, _ = run(tmp_path, lambda *a: pytest.fail("zed has no passkey to ask"), call)
    assert result.outcome == "reauth_failed" and "no passkey" in result.reason
