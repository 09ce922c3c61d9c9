"""OAuth step-up through the normal guard: a policy rule with ``reauth: {method: oauth}``."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from agentguard import Guard, Policy
from agentguard.audit import MemoryAuditLog
from agentguard.channels.scripted import ScriptedChannel
from agentguard.oauth import (
    CLAIMS_KEY,
    OAuthReauthenticator,
    TokenValidator,
    step_up_challenge,
    with_token,
)
from agentguard.store import SQLiteStore
from agentguard.types import CallContext, Principal, ToolCall
from tests.oauth.conftest import BRONZE, SILVER, Key, claims

pytestmark = pytest.mark.anyio

GOLD = "urn:example:gold"
POLICY = f"""
defaults: {{timeout: 5s}}
groups: {{payroll: [carol]}}
rules:
  - id: payroll-export
    match: {{tool: export_payroll}}
    class: write
    labels: [pii]
    require: reauth
    reauth: {{method: oauth, acr_values: [{SILVER}], max_age: 5m}}
  - id: wire-transfer
    match: {{tool: wire_transfer}}
    class: write
    require: reauth
    reauth: {{method: oauth, acr_values: [{GOLD}], max_age: 5m}}
  - id: payroll-run
    match: {{tool: run_payroll}}
    class: write
    require: approve+reauth
    approvers: [group:payroll]
    reauth: {{method: oauth, subject: principal, acr_values: [{SILVER}], max_age: 5m}}
"""


def guard_with(audit: MemoryAuditLog, **kwargs: object) -> Guard:
    return Guard(Policy.from_yaml(POLICY), audit=audit,
                 reauthenticators={"oauth": OAuthReauthenticator()}, **kwargs)  # type: ignore[arg-type]


async def call(validator: TokenValidator, token: str, tool: str = "export_payroll") -> ToolCall:
    """What the HTTP proxy builds: the validated token's claims on the call's context."""
    verified = await validator.validate(token)
    return ToolCall(tool=tool, args={"month": "2026-07"}, principal=Principal("agent:payroll"),
                    origin="mcp-proxy",
                    context=with_token(CallContext(source_ip="127.0.0.1"), verified))


async def test_adequate_claims_pass(validator: TokenValidator, rsa_a: Key) -> None:
    audit = MemoryAuditLog()
    async with guard_with(audit) as guard:
        auth = await guard.authorize(await call(validator, rsa_a.sign(claims())))
    assert auth.outcome == "approved", auth.reason
    (verified,) = audit.of_type("reauth.verified")
    assert (verified["subject"], verified["method"]) == ("alice", "oauth")
    assert step_up_challenge(auth) is None


async def test_a_wrong_acr_is_refused_with_a_step_up_challenge(
        validator: TokenValidator, rsa_a: Key) -> None:
    audit = MemoryAuditLog()
    async with guard_with(audit) as guard:
        auth = await guard.authorize(await call(validator, rsa_a.sign(claims(acr=BRONZE))))
    assert auth.outcome == "reauth_failed"
    assert f"acr '{BRONZE}' is not one of the required acr_values ({SILVER})" in auth.reason
    (failed,) = audit.of_type("reauth.failed")  # the audit records the challenge and why
    assert (failed["rule_id"], failed["method"], failed["subject"]) == (
        "payroll-export", "oauth", "alice")
    assert failed["outcome"] == "reauth_failed" and SILVER in failed["detail"]
    challenge = step_up_challenge(auth)
    assert challenge is not None and challenge.status == 401
    assert challenge.www_authenticate() == (
        'Bearer error="insufficient_user_authentication", error_description="agentguard '
        "rule 'payroll-export' requires a stronger or more recent authentication\", "
        f'acr_values="{SILVER}", max_age="300"')


async def test_too_old_an_authentication_is_refused(validator: TokenValidator,
                                                   rsa_a: Key) -> None:
    audit = MemoryAuditLog()
    token = rsa_a.sign(claims(auth_time=int(time.time()) - 900))
    async with guard_with(audit) as guard:
        auth = await guard.authorize(await call(validator, token))
    assert auth.outcome == "reauth_failed"
    assert "more than max_age 300s" in auth.reason
    assert "max_age" in audit.of_type("reauth.failed")[0]["detail"]


async def test_claims_that_were_not_verified_here_are_not_accepted(
        validator: TokenValidator, rsa_a: Key) -> None:
    """Claims arriving as plain data (a JSON body, a header) are not a verified token."""
    audit = MemoryAuditLog()
    good = await call(validator, rsa_a.sign(claims()))
    forged = replace(good, context=replace(good.context, extra={
        CLAIMS_KEY: dict(good.context.extra[CLAIMS_KEY])}))
    async with guard_with(audit) as guard:
        auth = await guard.authorize(forged)
    assert auth.outcome == "reauth_failed"
    assert "no verified OAuth token" in auth.reason


async def test_a_token_of_another_subject_does_not_count(validator: TokenValidator,
                                                         rsa_a: Key) -> None:
    audit = MemoryAuditLog()
    mine = await call(validator, rsa_a.sign(claims(sub="mallory")))
    for_alice = replace(mine, context=replace(mine.context, acting_for="alice"))
    async with guard_with(audit) as guard:
        auth = await guard.authorize(for_alice)
    assert auth.outcome == "reauth_failed"
    assert "issued to another subject, not alice" in auth.reason


async def test_approval_then_step_up_with_a_real_store(
        validator: TokenValidator, rsa_a: Key, tmp_path: Path) -> None:
    """The held call (its verified claims included) goes through a SQLite store."""
    audit = MemoryAuditLog()
    guard = guard_with(audit, store=SQLiteStore(tmp_path / "state.db"),
                       channels=[ScriptedChannel([ScriptedChannel.vote("carol")])])
    async with guard:
        good = await guard.authorize(await call(validator, rsa_a.sign(claims()), "run_payroll"))
        weak = await guard.authorize(await call(
            validator, rsa_a.sign(claims(sub="bob", acr=BRONZE)), "run_payroll"))
        stored = await guard.store.get_request(weak.request_id or "")
    assert good.outcome == "approved" and good.approvers == ("carol",)
    assert weak.outcome == "reauth_failed" and BRONZE in weak.reason
    assert stored is not None and stored.reauth is not None
    assert list(stored.reauth.acr_values) == [SILVER]
    assert stored.call["context"]["extra"][CLAIMS_KEY]["acr"] == BRONZE


async def test_refusals_that_are_not_oauth_step_up_give_no_challenge(
        validator: TokenValidator, rsa_a: Key) -> None:
    guard = Guard(Policy.from_yaml(POLICY.replace("method: oauth", "method: totp")))
    async with guard:
        auth = await guard.authorize(await call(validator, rsa_a.sign(claims())))
    assert auth.outcome == "reauth_failed" and step_up_challenge(auth) is None


async def test_a_recent_step_up_at_a_lower_level_does_not_satisfy_a_higher_one(
        validator: TokenValidator, rsa_a: Key) -> None:
    audit = MemoryAuditLog()
    async with guard_with(audit) as guard:
        silver = await guard.authorize(await call(validator, rsa_a.sign(claims())))
        gold = await guard.authorize(
            await call(validator, rsa_a.sign(claims()), "wire_transfer"))
    assert silver.outcome == "approved"
    assert gold.outcome == "reauth_failed"
