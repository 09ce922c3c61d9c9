"""Why a bearer token was refused. Messages are ours and never contain the token.

The tree::

    TokenError                  (an AgentGuardError)  the token is not acceptable: 401
     ├── MalformedToken         not a compact JWS we can read
     ├── UnsupportedAlgorithm   ``alg`` is none, symmetric (HS*) or not on the allow-list
     ├── UnknownKey             no key in the JWKS has the token's ``kid`` (after a refresh)
     ├── InvalidSignature       the signature does not verify
     ├── TokenExpired           ``exp`` has passed (beyond the leeway)
     ├── TokenNotYetValid       ``nbf`` / ``iat`` lie in the future (beyond the leeway)
     ├── InvalidIssuer          ``iss`` is not the configured issuer
     ├── InvalidAudience        ``aud`` does not name this resource
     └── MissingClaim           a required claim is absent or has the wrong type
    KeySetUnavailable           (an AgentGuardError)  the JWKS could not be fetched: fail
                                closed, 503 (the client is not at fault)
"""

from __future__ import annotations

from agentguard.errors import AgentGuardError

__all__ = [
    "InvalidAudience",
    "InvalidIssuer",
    "InvalidSignature",
    "KeySetUnavailable",
    "MalformedToken",
    "MissingClaim",
    "TokenError",
    "TokenExpired",
    "TokenNotYetValid",
    "UnknownKey",
    "UnsupportedAlgorithm",
]


class TokenError(AgentGuardError):
    """A bearer token was refused.

    Attributes:
        error: The RFC 6750 error code to answer with (``invalid_token``).
        description: A short, token-free description, safe for a ``WWW-Authenticate``
            header and for logs.
    """

    error = "invalid_token"

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)


class MalformedToken(TokenError):
    """The token is not a compact JWS (three base64url parts, JSON header and payload)."""


class UnsupportedAlgorithm(TokenError):
    """The ``alg`` header is ``none``, symmetric, or not on the validator's allow-list."""


class UnknownKey(TokenError):
    """No key of the JWKS matches the token's ``kid`` and algorithm, even after a refresh."""


class InvalidSignature(TokenError):
    """The signature does not verify with the key the ``kid`` names."""


class TokenExpired(TokenError):
    """The token's ``exp`` has passed."""


class TokenNotYetValid(TokenError):
    """The token's ``nbf`` (or ``iat``) lies in the future."""


class InvalidIssuer(TokenError):
    """The token's ``iss`` is not the configured issuer."""


class InvalidAudience(TokenError):
    """The token's ``aud`` does not name this resource server."""


class MissingClaim(TokenError):
    """A required claim is missing or has the wrong type."""


class KeySetUnavailable(AgentGuardError):
    """The JWKS could not be fetched or holds no usable key. Calls are refused (fail closed).

    Attributes:
        description: What went wrong, without secrets.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)
