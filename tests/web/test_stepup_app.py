"""The step-up page's server side without a browser (software passkey over ASGI): a request
stored for a step-up is offered as one (never as a vote), and the proof the page leaves is the
one the guard's reauthenticator accepts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agentguard.canonical import call_hash, call_to_dict
from agentguard.reauth.passkey import PasskeyReauthenticator, StepUpProof
from agentguard.reauth.passkey_mailbox import proof_slot
from agentguard.trust import TrustAnchors
from agentguard.types import ApprovalRequest, ApprovalSpec, Principal, ToolCall
from tests.web.test_app import challenge, client, sign_in, world  # noqa: F401

pytest.importorskip("webauthn")
pytestmark = pytest.mark.anyio


def stepup_request() -> ApprovalRequest:
    now = time.time()
    call = ToolCall(tool="reset_password", args={"account": "dave"},
                    principal=Principal("agent:helpdesk"))
    return ApprovalRequest(
        id="req_stepup_app_1", call=call_to_dict(call), call_hash=call_hash(call),
        created_at=now, expires_at=now + 60, rule_id="reset",
        reason="a step-up", privilege="privileged", labels=(),
        approval=ApprovalSpec(quorum=0))


async def test_a_step_up_request_is_offered_as_one_and_its_proof_passes_the_guard(
    world: dict[str, Any],  # noqa: F811
) -> None:
    store, dave = world["web"].store, world["passkeys"]["dave"]
    request = stepup_request()
    await store.create_request(request)
    async with client(world) as http:
        assert (await sign_in(http, "dave", dave)).status_code == 200
        assert f'href="/stepup/{request.id}"' in (await http.get("/")).text
        assert 'id="stepup-only"' in (await http.get(f"/requests/{request.id}")).text
        refused = await http.post(f"/api/requests/{request.id}/options",
                                  json={"decision": "approve", "reason": "", "grant_ttl": 0})
        assert refused.status_code == 409 and "step-up" in refused.json()["error"]
        page = await http.get(f"/stepup/{request.id}")
        assert page.status_code == 200 and "account" in page.text
        opened = (await http.post(f"/api/stepup/{request.id}/options", json={})).json()
        done = await http.post(f"/api/stepup/{request.id}/verify", json={
            "nonce": opened["nonce"], "credential": dave.assert_(challenge(opened["options"]))})
        assert done.status_code == 200, done.text
        again = await http.post(f"/api/stepup/{request.id}/verify", json={
            "nonce": opened["nonce"], "credential": dave.assert_(challenge(opened["options"]))})
        assert again.status_code == 400  # the ceremony is single use
    raw = await store.get_secret(proof_slot(request.id, "dave"))
    proof = StepUpProof.from_dict(json.loads(raw))

    async def hand_back(*_: Any) -> StepUpProof:
        return proof

    anchors = TrustAnchors.load(world["web"].trust_path)
    reauth = PasskeyReauthenticator(anchors, hand_back, clock=lambda: proof.statement.at)
    assert (await reauth.reauthenticate("dave", request)).kind == "verified"
    erin = await reauth.reauthenticate("erin", request)  # dave's proof is not erin's
    assert erin.kind == "failed" and "dave" in erin.reason
