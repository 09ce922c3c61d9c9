"""Step-up by re-authentication through the guard: TOTP, freshness, failure, approver subject."""

from __future__ import annotations

import pyotp
import pytest

from agentguard import Guard, Policy
from agentguard.audit import MemoryAuditLog
from agentguard.channels.scripted import ScriptedChannel
from agentguard.reauth import TotpReauthenticator, TotpVerifier
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 5s}
groups: {release: [alice]}
rules:
  - id: password-reset
    match: {tool: reset_password}
    class: write
    labels: [credential]
    require: reauth
    reauth: {method: totp, max_age: 5m}
  - id: prod-deploy
    match: {tool: deploy}
    class: write
    require: approve+reauth
    approvers: [group:release]
"""


class CodeBook:
    """The human at the authenticator app: types the current code (or a wrong one)."""

    def __init__(self, store: MemoryStore, wrong: bool = False) -> None:
        self.store = store
        self.wrong = wrong
        self.asked: list[str] = []

    async def __call__(self, subject: str, request: ApprovalRequest, attempt: int) -> str:
        self.asked.append(subject)
        secret = await self.store.get_secret(f"totp:{subject}")
        code = pyotp.TOTP(secret).now()
        return ("000000" if code != "000000" else "111111") if self.wrong else code


async def setup(wrong: bool = False, channel_votes=()):
    store = MemoryStore()
    await store.open()
    verifier = TotpVerifier(store)
    for name in ("operator-7", "alice"):
        await verifier.enroll(name)
    book = CodeBook(store, wrong)
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                  channels=[ScriptedChannel(list(channel_votes))],
                  reauthenticators={"totp": TotpReauthenticator(verifier, book)})
    return guard, book, audit


def reset(user: str) -> ToolCall:
    return ToolCall(tool="reset_password", args={"user": user},
                    principal=Principal("agent:helpdesk"),
                    context=CallContext(acting_for="operator-7"))


async def test_reauth_verifies_the_human_and_is_fresh_for_max_age() -> None:
    guard, book, audit = await setup()
    async with guard:
        first = await guard.authorize(reset("bob"))
        second = await guard.authorize(reset("carol"))
    assert first.outcome == second.outcome == "approved"
    assert book.asked == ["operator-7"]  # the second call reused the fresh verification
    kinds = [(e["type"], e.get("detail")) for e in audit.events if e["type"].startswith("reauth")]
    assert kinds == [("reauth.verified", None), ("reauth.verified", "fresh")]
    assert all("code" not in e for e in audit.events)


async def test_wrong_codes_fail_and_never_run() -> None:
    guard, book, audit = await setup(wrong=True)
    async with guard:
        auth = await guard.authorize(reset("bob"))
    assert auth.outcome == "reauth_failed"
    assert len(book.asked) == 3
    failed = [e for e in audit.events if e["type"] == "reauth.failed"]
    assert failed and failed[0]["subject"] == "operator-7"


async def test_approval_then_the_approver_reauthenticates() -> None:
    guard, book, _ = await setup(channel_votes=[ScriptedChannel.vote("alice")])
    async with guard:
        auth = await guard.authorize(ToolCall(tool="deploy", args={"env": "prod"},
                                              principal=Principal("svc:deploy-bot")))
    assert auth.outcome == "approved"
    assert book.asked == ["alice"]


async def test_missing_reauthenticator_fails_closed() -> None:
    guard = Guard(Policy.from_yaml(POLICY))
    async with guard:
        auth = await guard.authorize(reset("bob"))
    assert auth.outcome == "reauth_failed"
    assert "no totp re-authentication is set up" in auth.reason
