"""The proxy offers a passkey step-up as a URL-mode elicitation pointing at the web page's
``/stepup/...`` (the browser test of that page is tests/web/test_stepup.py). Here the asker is
a client double at the Asker seam; the proof arrives in the store as the page would leave it,
and the guard's reauthenticator checks it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import (
    ClientCapabilities,
    ElicitationCapability,
    ElicitResult,
    UrlElicitationCapability,
)

from agentguard.proxy.reauth_url import ReauthLinks, reauth_asker
from agentguard.reauth.passkey import PasskeyReauthenticator, ReauthStatement, StepUpProof
from agentguard.reauth.passkey_mailbox import MailboxStepUp, proof_slot
from agentguard.store import SQLiteStore
from agentguard.trust import TrustAnchors
from agentguard.types import ApprovalRequest, ApprovalSpec

pytestmark = pytest.mark.anyio
pytest.importorskip("webauthn")
from agentguard.testing.passkey import SoftPasskey  # noqa: E402

PAGE = "https://approvals.example.com"


class UrlClient:
    """A client at the Asker seam that supports URL-mode elicitation and answers ``action``."""

    client_name = "url-client"

    def __init__(self, action: str) -> None:
        self.capabilities = ClientCapabilities(
            elicitation=ElicitationCapability(url=UrlElicitationCapability()))
        self.action, self.asked = action, []

    async def ask(self, request: Any) -> Any:
        self.asked.append(request)
        return ElicitResult(action=self.action)

    async def progress(self, *_: Any) -> None:
        return None


def request_for(rid: str) -> ApprovalRequest:
    now = time.time()
    return ApprovalRequest(
        id=rid, call={"tool": "reset_password", "server": "helpdesk", "args": {}},
        call_hash="ab" * 32, created_at=now, expires_at=now + 20, rule_id="reset",
        reason="passwords need a step-up", privilege="privileged", labels=(),
        approval=ApprovalSpec(quorum=0, channels=("mcp-elicitation",)))


async def step_up(tmp_path: Path, action: str) -> tuple[Any, UrlClient]:
    carol = SoftPasskey(label="carol")
    anchors = TrustAnchors.from_mapping(
        {"version": 1, "approvers": [{"id": "carol", "passkeys": [carol.anchor()]}]})
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    links = ReauthLinks("http://127.0.0.1:9", fallback=lambda *a: None)  # type: ignore[arg-type]
    reauth = PasskeyReauthenticator(anchors, MailboxStepUp(
        store, PAGE, announce=links.offer_passkey, poll=0.02), max_attempts=1)
    client = UrlClient(action)
    request = request_for("req_stepup_1")

    async def the_page() -> None:  # what /stepup/... leaves once carol confirmed
        await anyio.sleep(0.2)
        statement = ReauthStatement(request.id, request.call_hash, "carol", int(time.time()))
        proof = StepUpProof(statement, carol.assert_(statement.digest()))
        await store.set_secret(proof_slot(request.id, "carol"), json.dumps(proof.to_dict()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(the_page)
        with reauth_asker(client):
            result = await reauth.reauthenticate("carol", request)
    await store.close()
    return result, client


async def test_the_link_offered_is_the_web_pages_step_up(tmp_path: Path) -> None:
    result, client = await step_up(tmp_path, "accept")
    assert result.kind == "verified", result
    (asked,) = client.asked
    assert asked.params.mode == "url"
    assert asked.params.url == f"{PAGE}/stepup/req_stepup_1"
    assert "passkey" in asked.params.message


async def test_a_declined_link_waits_for_nobody(tmp_path: Path) -> None:
    result, _ = await step_up(tmp_path, "decline")
    assert result.kind == "unreachable"
