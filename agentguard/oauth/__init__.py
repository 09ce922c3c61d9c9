"""OAuth for the HTTP proxy: bearer token validation and step-up (RFC 9470).

- :class:`TokenValidator` checks JWT access tokens against the issuer's JWKS
  (:class:`JwksClient`), issuer, audience and time claims; refusals are typed
  (:class:`TokenError` and subclasses) and never contain the token.
- :class:`BearerAuth` is the ASGI middleware that requires a valid token, exposes the
  :class:`VerifiedToken` to the app (:func:`token_from_scope`) and strips the
  ``Authorization`` header (no token passthrough).
- :class:`OAuthReauthenticator` (method ``oauth``) lets policy rules demand ``acr_values``
  and ``max_age``; :func:`step_up_challenge` turns the refusal into the RFC 9470
  ``WWW-Authenticate`` answer (:func:`request_step_up`) or a URL elicitation.

Needs nothing beyond agentguard's own dependencies (PyJWT and httpx2 come with ``mcp``);
``pip install 'agentguard[oauth]'`` pins them explicitly.
"""

from __future__ import annotations

from agentguard.oauth.asgi import (
    CHALLENGE_KEY,
    STATE_KEY,
    BearerAuth,
    challenge_response,
    request_step_up,
    send_challenge,
    token_from_scope,
)
from agentguard.oauth.errors import (
    InvalidAudience,
    InvalidIssuer,
    InvalidSignature,
    KeySetUnavailable,
    MalformedToken,
    MissingClaim,
    TokenError,
    TokenExpired,
    TokenNotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
)
from agentguard.oauth.jwks import JwksClient
from agentguard.oauth.stepup import (
    CLAIMS_KEY,
    OAuthReauthenticator,
    StepUpChallenge,
    step_up_challenge,
    step_up_shortfalls,
    url_elicitation,
    with_token,
)
from agentguard.oauth.tokens import (
    DEFAULT_ALGORITHMS,
    TokenValidator,
    VerifiedClaims,
    VerifiedToken,
)

__all__ = [
    "CHALLENGE_KEY",
    "CLAIMS_KEY",
    "DEFAULT_ALGORITHMS",
    "STATE_KEY",
    "BearerAuth",
    "InvalidAudience",
    "InvalidIssuer",
    "InvalidSignature",
    "JwksClient",
    "KeySetUnavailable",
    "MalformedToken",
    "MissingClaim",
    "OAuthReauthenticator",
    "StepUpChallenge",
    "TokenError",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenValidator",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "VerifiedClaims",
    "VerifiedToken",
    "challenge_response",
    "request_step_up",
    "send_challenge",
    "step_up_challenge",
    "step_up_shortfalls",
    "token_from_scope",
    "url_elicitation",
    "with_token",
]
