"""Bearer token validation: signature from the issuer's JWKS, issuer, audience, time claims.

PyJWT (a dependency of ``mcp``) checks the signature with a key bound to one algorithm; the
header and claims are parsed and checked here so that the clock can be injected, duplicate
JSON keys are refused, and every refusal is a typed :class:`~agentguard.oauth.errors.TokenError`
whose message never contains the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from jwt import PyJWS
from jwt.exceptions import InvalidSignatureError, PyJWTError

from agentguard.errors import ConfigError
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
    UnsupportedAlgorithm,
)
from agentguard.oauth.jwks import ALGORITHM_KEY_TYPES, JwksClient

__all__ = [
    "CONTEXT_CLAIMS",
    "DEFAULT_ALGORITHMS",
    "TokenValidator",
    "VerifiedClaims",
    "VerifiedToken",
    "access_token",
]

#: Accepted by default: asymmetric algorithms only (``none`` and HS* can never be enabled).
DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)

#: Claims copied onto a call's context: what step-up and approvers need, no profile data.
CONTEXT_CLAIMS: tuple[str, ...] = (
    "iss", "sub", "aud", "client_id", "azp", "scope", "acr", "amr", "auth_time", "iat", "exp",
)

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class VerifiedClaims(dict):
    """Read-only claims of a token this process verified.

    It is a ``dict`` (so JSON encoders and stores take it as one) whose type marks where it
    came from: the step-up check accepts claims only as this type, so claims that arrive as
    plain data (a JSON body, tool arguments, a stored request) are never taken as verified.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("verified claims are read-only")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (VerifiedClaims, (dict(self),))


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A validated access token, without the token itself.

    Attributes:
        claims: Every claim of the token.
        issuer: ``iss``.
        subject: ``sub`` (the resource owner: the human the agent acts for).
        audience: ``aud`` as a tuple.
        client_id: ``client_id`` or ``azp`` (the agent's OAuth client), if present.
        scopes: ``scope`` split on spaces (or ``scp``).
        expires_at: ``exp`` (Unix time).
        acr: Authentication context class the user authenticated at, if present.
        amr: Authentication methods used, if present.
        auth_time: Unix time the user last authenticated, if present.
        key_id: ``kid`` of the key that verified the signature.
        algorithm: ``alg`` of the signature.
    """

    claims: VerifiedClaims
    issuer: str
    subject: str | None
    audience: tuple[str, ...]
    client_id: str | None
    scopes: tuple[str, ...]
    expires_at: float
    acr: str | None
    amr: tuple[str, ...]
    auth_time: float | None
    key_id: str | None
    algorithm: str

    def context_claims(self, names: Iterable[str] = CONTEXT_CLAIMS) -> VerifiedClaims:
        """The step-up relevant claims, to put on a call's context (see
        :func:`agentguard.oauth.stepup.with_token`)."""
        return VerifiedClaims({n: self.claims[n] for n in names if n in self.claims})


def _b64(segment: str, part: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise MalformedToken(f"the token's {part} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken(f"the token's {part} is not base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate member")
        out[key] = value
    return out


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedToken(f"the token's {part} is not a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"the token's {part} is not a JSON object")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MissingClaim(f"the token's {name!r} claim is not a number")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise MissingClaim(f"the token's {name!r} claim is not a string")
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MissingClaim(f"the token's {name!r} claim is not a string or list of strings")


class TokenValidator:
    """Validates OAuth 2.0 JWT access tokens (RFC 9068) for one resource server.

    Args:
        issuer: The authorization server's issuer identifier; ``iss`` must equal it.
        audience: This resource's identifier(s); ``aud`` must name one of them.
        jwks: The issuer's key set: a :class:`JwksClient` or its URL.
        algorithms: Accepted ``alg`` values, asymmetric only (``none`` and HS* are refused
            at construction: the keys are public, so anyone could forge an HMAC).
        leeway: Seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
        required_claims: Claims every token must carry.
        token_type: If set (e.g. ``at+jwt``), the header's ``typ`` must match it.
        max_token_bytes: Longer tokens are refused before any parsing.
        clock: Unix time (tests inject one).

    Raises:
        ConfigError: an algorithm is not asymmetric, or issuer/audience are empty.
    """

    def __init__(
        self, *, issuer: str, audience: str | Iterable[str], jwks: JwksClient | str,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS, leeway: float = 30.0,
        required_claims: Iterable[str] = ("exp", "iss", "aud", "sub"),
        token_type: str | None = None, max_token_bytes: int = 16_384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = tuple(algorithms)
        bad = [a for a in self.algorithms if a not in ALGORITHM_KEY_TYPES]
        if bad or not self.algorithms:
            raise ConfigError(
                f"unsupported token algorithms {bad}: use asymmetric ones "
                f"({', '.join(ALGORITHM_KEY_TYPES)}); 'none' and HS* are never accepted")
        if not issuer:
            raise ConfigError("the token issuer must be set")
        self.audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not self.audiences or not all(self.audiences):
            raise ConfigError("the token audience must be set")
        self.issuer = issuer
        self.jwks = JwksClient(jwks) if isinstance(jwks, str) else jwks
        self.leeway = leeway
        self.required_claims = tuple(required_claims)
        self.token_type = token_type.lower().removeprefix("application/") if token_type else None
        self.max_token_bytes = max_token_bytes
        self.clock = clock

    async def validate(self, token: str) -> VerifiedToken:
        """Check a bearer token and return its verified claims.

        Raises:
            TokenError: the token is refused (a subclass says why).
            KeySetUnavailable: the issuer's keys could not be fetched (fail closed).
        """
        header = self._parse(token)
        alg = header["alg"]
        kid = header.get("kid")
        keys = await self.jwks.keys_for(kid, alg)
        payload = self._verify(token, keys, alg)
        claims = _json_object(payload, "payload")
        return self._check_claims(claims, kid, alg)

    async def verify_token(self, token: str) -> Any:
        """The ``mcp`` ``TokenVerifier`` protocol: an ``AccessToken``, or ``None`` if refused.

        Lets the same validator back the MCP SDK's own auth middleware.
        """
        try:
            verified = await self.validate(token)
        except (TokenError, KeySetUnavailable):
            return None
        return access_token(verified, self.audiences[0], token=token)

    # ------------------------------------------------------------------ steps
    def _parse(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token.isascii():
            raise MalformedToken("the token is not an ASCII string")
        if len(token) > self.max_token_bytes:
            raise MalformedToken(f"the token is longer than {self.max_token_bytes} bytes")
        parts = token.split(".")
        if len(parts) == 5:
            raise MalformedToken("encrypted tokens (JWE) are not accepted")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise MalformedToken("the token is not a signed JWT (three dot-separated parts)")
        header = _json_object(_b64(parts[0], "header"), "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise MalformedToken("the token's header names no algorithm")
        if alg.lower() == "none":
            raise UnsupportedAlgorithm("unsigned tokens (alg none) are refused")
        if alg.upper().startswith("HS"):
            raise UnsupportedAlgorithm(
                "symmetric algorithms (HS*) are refused: keys come from the issuer's key set")
        if alg not in self.algorithms:
            shown = alg if re.fullmatch(r"[A-Za-z0-9+-]{1,16}", alg) else "of this token"
            raise UnsupportedAlgorithm(f"the algorithm {shown} is not accepted")
        if "crit" in header:
            raise MalformedToken("critical header extensions are not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise MalformedToken("the token's key id is not a string")
        if self.token_type is not None:
            typ = header.get("typ")
            typ = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
            if typ != self.token_type:
                raise MalformedToken(f"the token's type is not {self.token_type}")
        _b64(parts[2], "signature")
        return header

    def _verify(self, token: str, keys: list[Any], alg: str) -> bytes:
        jws = PyJWS()
        for key in keys:
            try:
                return jws.decode_complete(token, key=key, algorithms=[alg])["payload"]
            except InvalidSignatureError:
                continue
            except PyJWTError:
                raise MalformedToken("the token could not be decoded") from None
        raise InvalidSignature("the token's signature does not verify")

    def _check_claims(self, claims: dict[str, Any], kid: str | None, alg: str) -> VerifiedToken:
        for name in self.required_claims:
            if claims.get(name) is None:
                raise MissingClaim(f"the token has no {name!r} claim")
        now = self.clock()
        issuer = _string(claims, "iss")
        if issuer != self.issuer:
            raise InvalidIssuer("the token was issued by another issuer")
        audience = _strings(claims.get("aud"), "aud")
        if not set(audience) & set(self.audiences):
            raise InvalidAudience("the token is not meant for this resource")
        exp = _number(claims, "exp")
        if exp is not None and now >= exp + self.leeway:
            raise TokenExpired("the token has expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise TokenNotYetValid("the token is not valid yet")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self.leeway:
            raise TokenNotYetValid("the token was issued in the future")
        scope = claims.get("scope")
        scopes = (tuple(scope.split()) if isinstance(scope, str)
                  else _strings(claims.get("scp"), "scp"))
        return VerifiedToken(
            claims=VerifiedClaims(claims),
            issuer=self.issuer,
            subject=_string(claims, "sub"),
            audience=audience,
            client_id=_string(claims, "client_id") or _string(claims, "azp"),
            scopes=scopes,
            expires_at=exp if exp is not None else math.inf,
            acr=_string(claims, "acr"),
            amr=_strings(claims.get("amr"), "amr"),
            auth_time=_number(claims, "auth_time"),
            key_id=kid,
            algorithm=alg,
        )


def access_token(verified: VerifiedToken, resource: str | None, *, token: str = "") -> Any:
    """The ``mcp.server.auth.provider.AccessToken`` for a verified token.

    ``token`` defaults to empty: code downstream of our middleware has no use for the raw
    token, and not holding it means it cannot be passed on by mistake.
    """
    from mcp.server.auth.provider import AccessToken

    return AccessToken(
        token=token, client_id=verified.client_id or "", scopes=list(verified.scopes),
        expires_at=None if math.isinf(verified.expires_at) else int(verified.expires_at),
        resource=resource, subject=verified.subject, claims=dict(verified.claims),
    )
