"""OAuth step-up (RFC 9470): does the token's ``acr`` / ``auth_time`` meet the rule?

A rule such as ``reauth: {method: oauth, acr_values: [urn:mace:incommon:iap:silver],
max_age: 5m}`` runs through the normal guard: the edge validates the bearer token and puts
its verified claims on the call's context (:func:`with_token`); the guard asks
:class:`OAuthReauthenticator`, which compares them with the rule; a shortfall is a
``reauth_failed`` refusal, audited like any other, which the edge turns into
``WWW-Authenticate: Bearer error="insufficient_user_authentication", ...``
(:func:`step_up_challenge`) or a URL elicitation (:func:`url_elicitation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from agentguard.oauth.tokens import VerifiedClaims, VerifiedToken
from agentguard.reauth.base import ReauthResult
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest, Authorization, CallContext

__all__ = [
    "CLAIMS_KEY",
    "OAuthReauthenticator",
    "StepUpChallenge",
    "step_up_challenge",
    "step_up_shortfalls",
    "url_elicitation",
    "with_token",
]

#: Key of the verified claims in ``CallContext.extra``.
CLAIMS_KEY = "oauth_claims"


def _quoted(value: str) -> str:
    """An HTTP quoted-string of printable ASCII (anything else becomes ``?``)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nqs(value: str) -> str:
    """RFC 6750 ``error_description``: printable ASCII without ``"`` and ``\\``."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "'" for c in value)


@dataclass(frozen=True, slots=True)
class StepUpChallenge:
    """What the client must do before the call can run: authenticate again.

    Attributes:
        acr_values: Acceptable authentication context classes, in order of preference.
        max_age: The authentication must be at most this many seconds old.
        description: Why, for ``error_description`` (printable ASCII; made safe).
        status: HTTP status to answer with (401, RFC 9470 section 3).
    """

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None
    description: str = "a stronger or more recent authentication is required"
    status: int = 401

    def www_authenticate(self, *, realm: str | None = None,
                         resource_metadata: str | None = None) -> str:
        """The ``WWW-Authenticate`` value, e.g. ``Bearer error="insufficient_user_authentication",
        error_description="...", acr_values="urn:a urn:b", max_age="300"``."""
        params = []
        if realm is not None:
            params.append(f"realm={_quoted(realm)}")
        params.append('error="insufficient_user_authentication"')
        params.append(f'error_description="{_nqs(self.description)}"')
        if self.acr_values:
            params.append(f"acr_values={_quoted(' '.join(self.acr_values))}")
        if self.max_age is not None:
            params.append(f'max_age="{self.max_age}"')
        if resource_metadata is not None:
            params.append(f"resource_metadata={_quoted(resource_metadata)}")
        return "Bearer " + ", ".join(params)

    def body(self) -> dict[str, Any]:
        """A JSON body to go with the header."""
        out: dict[str, Any] = {"error": "insufficient_user_authentication",
                               "error_description": _nqs(self.description)}
        if self.acr_values:
            out["acr_values"] = " ".join(self.acr_values)
        if self.max_age is not None:
            out["max_age"] = self.max_age
        return out

    def url(self, base: str) -> str:
        """``base`` with ``acr_values`` and ``max_age`` added to its query: where to send a
        human to re-authenticate (an authorization endpoint or a re-login page)."""
        parts = urlsplit(base)
        extra = {}
        if self.acr_values:
            extra["acr_values"] = " ".join(self.acr_values)
        if self.max_age is not None:
            extra["max_age"] = str(self.max_age)
        query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
        return urlunsplit(parts._replace(query=query))


def step_up_shortfalls(
    claims: Mapping[str, Any], *, acr_values: Iterable[str] = (), max_age: float | None = None,
    now: float, leeway: float = 30.0,
) -> list[str]:
    """What the token's authentication lacks for a rule; empty when it suffices.

    Args:
        claims: Verified token claims.
        acr_values: The token's ``acr`` must be one of these (empty: any).
        max_age: ``auth_time`` must be at most this many seconds before ``now`` (None or 0:
            no limit).
        now: Unix time.
        leeway: Clock skew tolerated for an ``auth_time`` slightly in the future.
    """
    out = []
    wanted = tuple(acr_values)
    if wanted:
        acr = claims.get("acr")
        listed = " ".join(wanted)
        if not isinstance(acr, str):
            out.append(f"the token carries no acr (required acr_values: {listed})")
        elif acr not in wanted:
            out.append(f"the token's acr {escape_text(acr)!r} is not one of the required "
                       f"acr_values ({listed})")
    if max_age:
        auth_time = claims.get("auth_time")
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            out.append(f"the token carries no auth_time (required for max_age {max_age:.0f}s)")
        elif auth_time > now + leeway:
            out.append("the token's auth_time lies in the future")
        elif now - auth_time > max_age:
            out.append(f"the user authenticated {now - auth_time:.0f}s ago, more than "
                       f"max_age {max_age:.0f}s")
    return out


def with_token(context: CallContext, token: VerifiedToken) -> CallContext:
    """``context`` with the token's subject as ``acting_for`` and its step-up claims in
    ``extra[CLAIMS_KEY]`` (what :class:`OAuthReauthenticator` reads)."""
    return replace(context, acting_for=token.subject or context.acting_for,
                   extra={**context.extra, CLAIMS_KEY: token.context_claims()})


def step_up_challenge(auth: Authorization) -> StepUpChallenge | None:
    """The RFC 9470 challenge for a refusal, or ``None`` if it was not an OAuth step-up.

    The edge answers with ``challenge.status`` and ``WWW-Authenticate:
    challenge.www_authenticate()`` (see :func:`agentguard.oauth.asgi.request_step_up`), or
    with :func:`url_elicitation`.
    """
    spec = getattr(auth.decision, "reauth", None)
    if auth.outcome != "reauth_failed" or spec is None or spec.method != "oauth":
        return None
    rule = f"rule {auth.rule_id!r}" if auth.rule_id else "the policy"
    return StepUpChallenge(
        acr_values=tuple(spec.acr_values),
        max_age=int(spec.max_age) if spec.max_age > 0 else None,
        description=f"agentguard {rule} requires a stronger or more recent authentication",
    )


def url_elicitation(challenge: StepUpChallenge, url: str, *, elicitation_id: str,
                    message: str | None = None) -> Any:
    """An ``mcp.UrlElicitationRequiredError`` sending the user to ``challenge.url(url)``.

    Raise it from an MCP tool handler (JSON-RPC error -32042) for clients that support URL
    elicitation; they open the page, the user re-authenticates, and the client retries.
    """
    from mcp import UrlElicitationRequiredError
    from mcp.types import ElicitRequestURLParams

    text = message or ("agentguard: this tool call needs you to sign in again"
                       + (f" (acr {' or '.join(challenge.acr_values)})"
                          if challenge.acr_values else "")
                       + (f" within {challenge.max_age}s" if challenge.max_age else "")
                       + ", then retry.")
    return UrlElicitationRequiredError([ElicitRequestURLParams(
        mode="url", message=text, url=challenge.url(url), elicitation_id=elicitation_id)])


class OAuthReauthenticator:
    """Re-authentication by OAuth step-up: the call's verified token must meet the rule.

    The proof is the bearer token the edge validated (never tool arguments): the claims
    are read from ``CallContext.extra[CLAIMS_KEY]`` and must be a
    :class:`~agentguard.oauth.tokens.VerifiedClaims` put there by :func:`with_token`.

    Args:
        clock: Unix time (tests inject one).
        leeway: Clock skew tolerated on ``exp`` and a future ``auth_time``.
        subject_claim: Claim naming who authenticated; it must equal the subject the guard
            asks about (``acting_for``, else the principal id), with ``subject_prefix``.
        subject_prefix: Prefix mapping the claim to agentguard ids (e.g. ``oidc:``).
    """

    method = "oauth"
    #: The token is the proof each time: an earlier verification must not stand in for it
    #: (it may have had another acr). The guard reads this before reusing a recent one.
    reuse_recent_verification = False

    def __init__(self, *, clock: Callable[[], float] = time.time, leeway: float = 30.0,
                 subject_claim: str = "sub", subject_prefix: str = "") -> None:
        self.clock = clock
        self.leeway = leeway
        self.subject_claim = subject_claim
        self.subject_prefix = subject_prefix

    async def reauthenticate(self, subject: str, request: ApprovalRequest) -> ReauthResult:
        """Compare the call's verified claims with the rule's ``acr_values`` / ``max_age``."""
        claims = _claims_of(request)
        if claims is None:
            return ReauthResult("unreachable", subject, self.method,
                                "no verified OAuth token came with this call (OAuth step-up "
                                "needs the HTTP proxy with bearer authentication)")
        holder = claims.get(self.subject_claim)
        if not isinstance(holder, str) or self.subject_prefix + holder != subject:
            return ReauthResult("failed", subject, self.method,
                                f"the token was issued to another subject, not {subject}")
        now = self.clock()
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and (
                now >= exp + self.leeway):
            return ReauthResult("failed", subject, self.method,
                                "the token expired while the call waited")
        spec = request.reauth
        if spec is None:
            return ReauthResult("failed", subject, self.method,
                                "the request carries no step-up requirement to check")
        shortfalls = step_up_shortfalls(claims, acr_values=spec.acr_values,
                                        max_age=spec.max_age, now=now, leeway=self.leeway)
        if shortfalls:
            return ReauthResult("failed", subject, self.method, "; ".join(shortfalls))
        return ReauthResult("verified", subject, self.method, "the token meets the step-up")


def _claims_of(request: ApprovalRequest) -> VerifiedClaims | None:
    context = request.call.get("context")
    extra = context.get("extra") if isinstance(context, Mapping) else None
    claims = extra.get(CLAIMS_KEY) if isinstance(extra, Mapping) else None
    return claims if isinstance(claims, VerifiedClaims) else None
