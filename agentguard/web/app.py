"""The web approval page: routes and handlers (``agentguard serve --web``).

Pages (HTML, rendered by :mod:`agentguard.web.views`) and JSON endpoints the page's script
calls around each WebAuthn ceremony::

    GET  /                         inbox of held calls (signed in)
    GET  /login                    pick your identity, prove it with your passkey
    GET  /requests/{id}            the whole call, why it was held, a countdown, the vote form
    GET  /enroll#TOKEN             register a passkey with an enrolment link
    POST /api/login/options|verify
    POST /api/requests/{id}/options   -> the statement to confirm and its WebAuthn options
    POST /api/requests/{id}/vote      -> verify the assertion, then cast_vote(receipt=...)
    POST /api/enroll/options|verify   -> verify the token and the registration, write the file
    GET  /stepup/{id}, POST /api/stepup/{id}/options|verify   passkey step-up
                                      (:mod:`agentguard.web.stepup`)

Every decision about a passkey, a statement or an enrolment token is made by
:mod:`agentguard.trust` (the same functions the guard uses); this module only carries data
between the browser, those checks and the store. The vote's challenge is
:meth:`VoteStatement.digest() <agentguard.trust.VoteStatement.digest>`, so the assertion is the
approver's signature over exactly what the guard will check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentguard.approvals import call_hash_problem, cast_vote, shown_hash, shown_view
from agentguard.audit.base import AuditSink
from agentguard.channels.render import REASON_LIMIT, denial_reason
from agentguard.store.base import Store
from agentguard.trust import PasskeyVote, TrustAnchors, TrustFileError, VoteStatement
from agentguard.trust.enrol import add_passkey, registered_passkey, verify_enrolment
from agentguard.trust.passkey import (
    assertion_sign_count,
    b64url_decode,
    verify_assertion,
)
from agentguard.trust.verify import VerifiedVote, verify_vote
from agentguard.web.ceremonies import Ceremonies, Sessions, SignCounters
from agentguard.web.refusal import Refused
from agentguard.web.stepup import StepUp
from agentguard.web.views import Views, grant_choices

__all__ = ["COOKIE", "WebApproval"]

COOKIE = "agentguard_session"


@dataclass
class WebApproval:
    """The web approval page for one store, audit log and trust file.

    Attributes:
        store: The store shared with the guard.
        audit: Where refused votes and enrolments are audited.
        trust_path: The trust file (read on each check; written only on enrolment).
        origin: The page's origin exactly as browsers send it (``https://host[:port]``).
        rp_id: The WebAuthn relying party id (the origin's host, or a parent domain).
    """

    store: Store
    audit: AuditSink
    trust_path: Path
    origin: str
    rp_id: str
    sessions: Sessions = field(default_factory=Sessions)
    ceremonies: Ceremonies = field(default_factory=Ceremonies)
    counters: SignCounters = field(default_factory=SignCounters)
    _used_tokens: set[str] = field(default_factory=set)
    views: Views = field(default_factory=Views)

    def routes(self) -> list[Any]:
        """Starlette routes of the page."""
        from starlette.routing import Route

        return [
            Route("/", self.inbox, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/enroll", self.enrol_page, methods=["GET"]),
            Route("/requests/{request_id}", self.request_page, methods=["GET"]),
            Route("/static/app.js", self.views.script, methods=["GET"]),
            Route("/static/app.css", self.views.stylesheet, methods=["GET"]),
            Route("/api/login/options", self.login_options, methods=["POST"]),
            Route("/api/login/verify", self.login_verify, methods=["POST"]),
            Route("/api/requests/{request_id}/options", self.vote_options, methods=["POST"]),
            Route("/api/requests/{request_id}/vote", self.vote, methods=["POST"]),
            Route("/api/enroll/options", self.enrol_options, methods=["POST"]),
            Route("/api/enroll/verify", self.enrol_verify, methods=["POST"]),
            *StepUp(self).routes(),
        ]

    # ------------------------------------------------------------------ helpers
    def anchors(self) -> TrustAnchors:
        """The trust file as it is now."""
        return TrustAnchors.load(self.trust_path)

    def _who(self, request: Any) -> str | None:
        return self.sessions.identity(request.cookies.get(COOKIE))

    async def _body(self, request: Any) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            raise Refused("send JSON", 415)
        try:
            data = await request.json()
        except ValueError:
            raise Refused("send JSON", 400) from None
        if not isinstance(data, dict):
            raise Refused("send a JSON object", 400)
        return data

    def _request_options(self, challenge: bytes, credential_ids: list[str]) -> dict[str, Any]:
        import json

        from webauthn import generate_authentication_options, options_to_json
        from webauthn.helpers.structs import (
            PublicKeyCredentialDescriptor,
            UserVerificationRequirement,
        )

        options = generate_authentication_options(
            rp_id=self.rp_id, challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=b64url_decode(c))
                               for c in credential_ids],
            user_verification=UserVerificationRequirement.REQUIRED)
        return json.loads(options_to_json(options))

    # ------------------------------------------------------------------ pages
    async def inbox(self, request: Any) -> Any:
        who = self._who(request)
        if who is None:
            return self.views.redirect("/login")
        pending = await self.store.list_requests("pending", limit=200)
        return self.views.page("inbox.html", who=who, requests=pending, now=time.time())

    async def login_page(self, request: Any) -> Any:
        try:
            anchors = self.anchors()
        except TrustFileError as exc:
            return self.views.page("error.html", who=None, message=str(exc), status=500)
        names = [a.identity for a in anchors.approvers if a.passkeys]
        return self.views.page("login.html", who=self._who(request), approvers=names)

    async def logout(self, request: Any) -> Any:
        response = self.views.redirect("/login")
        response.delete_cookie(COOKIE)
        return response

    async def enrol_page(self, request: Any) -> Any:
        return self.views.page("enroll.html", who=self._who(request))

    async def request_page(self, request: Any) -> Any:
        who = self._who(request)
        if who is None:
            return self.views.redirect("/login")
        held = await self.store.get_request(request.path_params["request_id"])
        if held is None:
            return self.views.page("error.html", who=who, message="no such request", status=404)
        return self.views.page("request.html", who=who, request=held, now=time.time(),
                               grants=grant_choices(held.approval),
                               tampered=call_hash_problem(held),
                               shown=shown_hash(shown_view(held)) or "")

    # ------------------------------------------------------------------ sign-in
    async def login_options(self, request: Any) -> Any:
        return await self._json(self._login_options, request)

    async def _login_options(self, request: Any) -> dict[str, Any]:
        import os

        body = await self._body(request)
        approver = self.anchors().approver(str(body.get("approver", "")))
        if approver is None or not approver.passkeys:
            raise Refused("no passkey is enrolled for that approver", 404)
        challenge = os.urandom(32)
        nonce = self.ceremonies.open("login", challenge, approver=approver.identity)
        return {"nonce": nonce, "options": self._request_options(
            challenge, [p.credential_id for p in approver.passkeys])}

    async def login_verify(self, request: Any) -> Any:
        response = await self._json(self._login_verify, request)
        if response.status_code == 200:
            import json

            identity = json.loads(response.body)["identity"]
            response.set_cookie(COOKIE, self.sessions.issue(identity), httponly=True,
                                samesite="strict", secure=self.origin.startswith("https:"))
        return response

    async def _login_verify(self, request: Any) -> dict[str, Any]:
        body = await self._body(request)
        ceremony = self.ceremonies.take(body.get("nonce"), "login")
        if ceremony is None:
            raise Refused("this sign-in expired or was already used; start again", 400)
        credential = body.get("credential")
        found = self.anchors().passkey(
            str(credential.get("id")) if isinstance(credential, dict) else "")
        if (found is None or not isinstance(credential, dict)
                or found[0].identity != ceremony.data["approver"]):
            problem: str | None = "that passkey is not enrolled for this approver"
        else:
            result = verify_assertion(credential, challenge=ceremony.challenge,
                                      passkey=found[1])
            problem = result if isinstance(result, str) else self.counters.advance(
                found[1].credential_id, result)
        if problem:
            self.audit.append({"type": "web.signin_refused",
                               "approver": ceremony.data["approver"], "detail": problem})
            raise Refused(problem, 403)
        assert found is not None
        self.audit.append({"type": "web.signin", "approver": found[0].identity,
                           "credential_id": found[1].credential_id})
        return {"ok": True, "identity": found[0].identity}

    # ------------------------------------------------------------------ votes
    async def vote_options(self, request: Any) -> Any:
        return await self._json(self._vote_options, request)

    async def _vote_options(self, request: Any) -> dict[str, Any]:
        who = self._who(request)
        if who is None:
            raise Refused("sign in first", 401)
        body = await self._body(request)
        held = await self.store.get_request(request.path_params["request_id"])
        if held is None or held.status != "pending":
            raise Refused("this request is not pending", 409)
        if held.approval.quorum == 0:  # stored by a passkey step-up (reauth alone)
            raise Refused("this call waits for a step-up, not a vote", 409)
        tampered = call_hash_problem(held)
        if tampered:
            raise Refused(tampered, 409)
        approve = body.get("decision") == "approve"
        if body.get("decision") not in ("approve", "deny"):
            raise Refused("decision is approve or deny", 400)
        grant = body.get("grant_ttl", 0)
        allowed = max((s for s, _ in grant_choices(held.approval)), default=0.0)
        if type(grant) not in (int, float) or not 0 <= grant <= allowed:
            raise Refused("this rule does not allow approving for that long", 400)
        reason = "" if approve else denial_reason(str(body.get("reason", ""))[:REASON_LIMIT])
        approver = self.anchors().approver(who)
        if approver is None or not approver.passkeys:
            raise Refused("no passkey is enrolled for you", 403)
        # The statement names the call this page displayed; if the store changed it since,
        # the approver read something else: refuse rather than sign the new version.
        shown = shown_hash(shown_view(held))
        if shown is None or (approve and body.get("shown") != shown):
            raise Refused("the call changed since this page showed it: reload and read it "
                           "again", 409)
        statement = VoteStatement.for_vote(
            request_id=held.id, call_hash=held.call_hash, rule_id=held.rule_id,
            settings_hash=held.settings_hash, approve=approve, approver=who, at=time.time(),
            shown_hash=shown, grant_ttl=float(grant) if approve else 0.0, reason=reason)
        nonce = self.ceremonies.open("vote", statement.digest(), request_id=held.id,
                                     approver=who, statement=statement, reason=reason)
        return {"nonce": nonce, "statement": statement.to_dict(),
                "options": self._request_options(
                    statement.digest(), [p.credential_id for p in approver.passkeys])}

    async def vote(self, request: Any) -> Any:
        return await self._json(self._vote, request)

    async def _vote(self, request: Any) -> dict[str, Any]:
        who = self._who(request)
        if who is None:
            raise Refused("sign in first", 401)
        body = await self._body(request)
        request_id = request.path_params["request_id"]
        ceremony = self.ceremonies.take(body.get("nonce"), "vote")
        if (ceremony is None or ceremony.data["request_id"] != request_id
                or ceremony.data["approver"] != who):
            raise Refused("this vote expired or was already sent; start again", 400)
        held = await self.store.get_request(request_id)
        if held is None:
            raise Refused("no such request", 404)
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise Refused("no passkey assertion", 400)
        statement: VoteStatement = ceremony.data["statement"]
        passkey_vote = PasskeyVote(statement, credential)
        result = verify_vote(passkey_vote, request_id=held.id, call_hash=held.call_hash,
                             rule_id=held.rule_id, settings_hash=held.settings_hash,
                             anchors=self.anchors())
        if isinstance(result, VerifiedVote) and result.identity != who:
            result = f"the passkey belongs to {result.identity!r}, not to {who!r}"
        if not isinstance(result, str):
            result = self.counters.advance(passkey_vote.credential_id,
                                           assertion_sign_count(credential)) or result
        if isinstance(result, str):
            from agentguard.approvals import request_event

            self.audit.append(request_event(held, "vote.rejected", approver=who,
                                            channel="web", detail=result))
            raise Refused(result, 403)
        after, problem = await cast_vote(
            store=self.store, audit=self.audit, request_id=held.id, approver=who,
            approve=statement.approve, channel="web", reason=ceremony.data["reason"],
            grant_ttl=statement.grant_ttl, now=float(statement.at),
            receipt=passkey_vote.to_dict())
        if problem is not None:
            raise Refused(problem, 409)
        assert after is not None
        return {"ok": True, "status": after.status,
                "message": f"{'approved' if statement.approve else 'denied'}; "
                           f"request is {after.status}"}

    # ------------------------------------------------------------------ enrolment
    async def enrol_options(self, request: Any) -> Any:
        return await self._json(self._enrol_options, request)

    async def _enrol_options(self, request: Any) -> dict[str, Any]:
        import json
        import os

        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers.structs import (
            AuthenticatorSelectionCriteria,
            PublicKeyCredentialDescriptor,
            ResidentKeyRequirement,
            UserVerificationRequirement,
        )

        body = await self._body(request)
        anchors = self.anchors()
        grant = verify_enrolment(str(body.get("token", "")), anchors)
        if isinstance(grant, str):
            raise Refused(grant, 403)
        if grant.nonce in self._used_tokens:
            raise Refused("this enrolment link was already used", 403)
        label = str(body.get("label", ""))[:100] or "passkey"
        challenge = os.urandom(32)
        existing = anchors.approver(grant.approver)
        options = generate_registration_options(
            rp_id=self.rp_id, rp_name="agentguard approvals", user_name=grant.approver,
            user_id=grant.approver.encode("utf-8")[:64], challenge=challenge,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=b64url_decode(p.credential_id))
                                 for p in (existing.passkeys if existing else ())],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED))
        nonce = self.ceremonies.open("enrol", challenge, grant=grant, label=label)
        return {"nonce": nonce, "approver": grant.approver,
                "options": json.loads(options_to_json(options))}

    async def enrol_verify(self, request: Any) -> Any:
        return await self._json(self._enrol_verify, request)

    async def _enrol_verify(self, request: Any) -> dict[str, Any]:
        body = await self._body(request)
        ceremony = self.ceremonies.take(body.get("nonce"), "enrol")
        if ceremony is None:
            raise Refused("this enrolment expired or was already used; start again", 400)
        grant = ceremony.data["grant"]
        if grant.nonce in self._used_tokens:
            raise Refused("this enrolment link was already used", 403)
        passkey = registered_passkey(body.get("credential"), challenge=ceremony.challenge,
                                     rp_id=self.rp_id, origin=self.origin,
                                     label=ceremony.data["label"])
        if isinstance(passkey, str):
            raise Refused(passkey, 403)
        self._used_tokens.add(grant.nonce)
        add_passkey(self.trust_path, grant.approver, passkey)
        self.audit.append({"type": "passkey.enrolled", "approver": grant.approver,
                           "credential_id": passkey.credential_id, "label": passkey.label,
                           "authorised_by_key": grant.key_id})
        return {"ok": True, "approver": grant.approver, "credential_id": passkey.credential_id}

    # ------------------------------------------------------------------ JSON plumbing
    async def _json(self, handler: Any, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            return JSONResponse(await handler(request))
        except Refused as refused:
            return JSONResponse({"ok": False, "error": refused.message}, refused.status)
        except TrustFileError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 500)


