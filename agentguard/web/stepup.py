"""The web page's passkey step-up: ``/stepup/{request id}`` (see
:mod:`agentguard.reauth.passkey_mailbox` for the guard's side).

The signed-in person reads the held call and confirms with a passkey; the assertion's
challenge is a :class:`~agentguard.reauth.passkey.ReauthStatement` of this request, its call
hash, that person and now. The page checks it with the same function the guard uses
(:func:`~agentguard.reauth.passkey.verify_reauth_assertion`), refuses a replay (single-use
ceremony, signature counter), and leaves the proof in the store. It decides nothing: the guard
checks the proof again against the trust file and the call it holds.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from agentguard.approvals import call_hash_problem
from agentguard.reauth.passkey import ReauthStatement, StepUpProof, verify_reauth_assertion
from agentguard.reauth.passkey_mailbox import proof_slot
from agentguard.trust.passkey import assertion_sign_count
from agentguard.web.refusal import Refused

if TYPE_CHECKING:
    from agentguard.web.app import WebApproval

__all__ = ["StepUp"]


class StepUp:
    """Routes of the step-up page, sharing the approval page's sessions and ceremonies."""

    def __init__(self, web: WebApproval) -> None:
        self.web = web

    def routes(self) -> list[Any]:
        from starlette.routing import Route

        return [
            Route("/stepup/{request_id}", self.page, methods=["GET"]),
            Route("/api/stepup/{request_id}/options", self.options, methods=["POST"]),
            Route("/api/stepup/{request_id}/verify", self.verify, methods=["POST"]),
        ]

    async def page(self, request: Any) -> Any:
        web = self.web
        who = web._who(request)
        if who is None:
            return web.views.redirect("/login")
        held = await web.store.get_request(request.path_params["request_id"])
        if held is None:
            return web.views.page("error.html", who=who, message="no such request", status=404)
        return web.views.page("stepup.html", who=who, request=held, now=time.time(),
                              tampered=call_hash_problem(held))

    async def options(self, request: Any) -> Any:
        return await self.web._json(self._options, request)

    async def _options(self, request: Any) -> dict[str, Any]:
        web = self.web
        who = web._who(request)
        if who is None:
            raise Refused("sign in first", 401)
        held = await web.store.get_request(request.path_params["request_id"])
        if held is None or held.expires_at < time.time():
            raise Refused("no such request, or it expired", 404)
        tampered = call_hash_problem(held)
        if tampered:
            raise Refused(tampered, 409)
        approver = web.anchors().approver(who)
        if approver is None or not approver.passkeys:
            raise Refused("no passkey is enrolled for you", 403)
        statement = ReauthStatement(request_id=held.id, call_hash=held.call_hash,
                                    subject=approver.identity, at=int(time.time()))
        nonce = web.ceremonies.open("stepup", statement.digest(), request_id=held.id,
                                    subject=approver.identity, statement=statement)
        return {"nonce": nonce, "statement": statement.to_dict(),
                "options": web._request_options(
                    statement.digest(), [p.credential_id for p in approver.passkeys])}

    async def verify(self, request: Any) -> Any:
        return await self.web._json(self._verify, request)

    async def _verify(self, request: Any) -> dict[str, Any]:
        web = self.web
        who = web._who(request)
        if who is None:
            raise Refused("sign in first", 401)
        body = await web._body(request)
        ceremony = web.ceremonies.take(body.get("nonce"), "stepup")
        anchor = web.anchors().approver(who)
        if ceremony is None or anchor is None or ceremony.data["request_id"] != (
                request.path_params["request_id"]) or ceremony.data["subject"] != anchor.identity:
            raise Refused("this step-up expired or was already sent; start again", 400)
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise Refused("no passkey assertion", 400)
        statement: ReauthStatement = ceremony.data["statement"]
        anchor = web.anchors().approver(statement.subject)
        problem = verify_reauth_assertion(credential, statement, anchor) if anchor else \
            "no passkey is enrolled for you"
        if problem is None:
            problem = web.counters.advance(str(credential.get("id")),
                                           assertion_sign_count(credential))
        if problem is not None:
            web.audit.append({"type": "web.stepup_refused", "subject": statement.subject,
                              "request_id": statement.request_id, "detail": problem})
            raise Refused(problem, 403)
        proof = StepUpProof(statement, credential)
        await web.store.set_secret(proof_slot(statement.request_id, statement.subject),
                                   json.dumps(proof.to_dict(), sort_keys=True))
        web.audit.append({"type": "web.stepup", "subject": statement.subject,
                          "request_id": statement.request_id,
                          "credential_id": credential.get("id")})
        return {"ok": True, "message": "step-up done: the held call can go on"}
