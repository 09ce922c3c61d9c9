"""Bearer authentication in front of an ASGI app (the proxy's Streamable HTTP endpoint).

:class:`BearerAuth` validates the token on every request, answers ``401`` with
``WWW-Authenticate: Bearer ...`` when it is missing or invalid, puts the
:class:`~agentguard.oauth.tokens.VerifiedToken` in the request's ASGI ``state`` (and an MCP
``AuthenticatedUser`` in ``scope["user"]``, so the SDK binds sessions to the token's
principal), and removes the ``Authorization`` header before the app sees it: no token
passthrough unless ``forward_token=True``.

An edge that refuses a call for OAuth step-up calls :func:`request_step_up`; when the app
has not started its response yet (JSON responses), the middleware answers ``401`` with the
RFC 9470 header instead of the app's response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from agentguard.oauth.errors import KeySetUnavailable, TokenError
from agentguard.oauth.stepup import StepUpChallenge, _nqs, _quoted
from agentguard.oauth.tokens import TokenValidator, VerifiedToken, access_token

__all__ = [
    "CHALLENGE_KEY",
    "STATE_KEY",
    "BearerAuth",
    "challenge_response",
    "request_step_up",
    "send_challenge",
    "token_from_scope",
]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: ``state`` key of the request's :class:`VerifiedToken` (``request.state.agentguard_oauth``).
STATE_KEY = "agentguard_oauth"
#: ``state`` key an edge sets (via :func:`request_step_up`) to answer with a challenge.
CHALLENGE_KEY = "agentguard_oauth_challenge"


def _state_of(target: Any) -> MutableMapping[str, Any] | None:
    scope = getattr(target, "scope", target)  # a Starlette Request, or the scope itself
    if not isinstance(scope, MutableMapping):
        return None
    state = scope.get("state")
    return state if isinstance(state, MutableMapping) else None


def token_from_scope(target: Any) -> VerifiedToken | None:
    """The verified token of a request (an ASGI scope or a Starlette ``Request``), or
    ``None`` when it did not pass through :class:`BearerAuth` with a token."""
    state = _state_of(target)
    token = state.get(STATE_KEY) if state is not None else None
    return token if isinstance(token, VerifiedToken) else None


def request_step_up(target: Any, challenge: StepUpChallenge) -> bool:
    """Ask :class:`BearerAuth` to answer this request with ``challenge`` (HTTP 401 and the
    RFC 9470 ``WWW-Authenticate``) instead of the app's own response.

    Returns:
        True when the request came through :class:`BearerAuth`. The substitution happens
        only if the app had not started its response (JSON-response mode); a streamed
        (SSE) response has already sent its status, so render the refusal in-band too.
    """
    state = _state_of(target)
    if state is None or STATE_KEY not in state:
        return False
    state[CHALLENGE_KEY] = challenge
    return True


async def _respond(send: Send, status: int, body: dict[str, Any],
                   www_authenticate: str | None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode()),
               (b"cache-control", b"no-store")]
    if www_authenticate is not None:
        headers.append((b"www-authenticate", www_authenticate.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_challenge(send: Send, challenge: StepUpChallenge, *, realm: str | None = None,
                         resource_metadata: str | None = None) -> None:
    """Answer an ASGI request with a step-up challenge (status, header and JSON body)."""
    await _respond(send, challenge.status, challenge.body(),
                   challenge.www_authenticate(realm=realm, resource_metadata=resource_metadata))


def challenge_response(challenge: StepUpChallenge, *, realm: str | None = None,
                       resource_metadata: str | None = None) -> Any:
    """A Starlette ``JSONResponse`` carrying a step-up challenge."""
    from starlette.responses import JSONResponse

    return JSONResponse(challenge.body(), status_code=challenge.status, headers={
        "WWW-Authenticate": challenge.www_authenticate(
            realm=realm, resource_metadata=resource_metadata),
        "Cache-Control": "no-store"})


class BearerAuth:
    """ASGI middleware requiring a valid OAuth bearer token on every request.

    Args:
        app: The ASGI app to protect.
        validator: Checks tokens (:class:`~agentguard.oauth.tokens.TokenValidator`).
        required: Refuse requests without a token (``False``: let them through without
            claims; a token that is present must still be valid).
        forward_token: Leave the ``Authorization`` header for the app. Off by default: the
            token was issued to this server, and passing it on (to upstream servers) is
            the "token passthrough" the MCP security guidance forbids.
        realm: ``realm`` of the challenges.
        resource_metadata: URL of this server's OAuth protected resource metadata
            (RFC 9728), added to challenges so clients find the authorization server.
        required_scopes: Scopes every token must carry; a token without them gets ``403``
            with ``error="insufficient_scope"`` (clients then ask for a wider grant).
        exempt_paths: Path prefixes served without a token (the metadata document), for
            ``GET``/``HEAD``/``OPTIONS`` only.
        bind_session: Also set ``scope["user"]`` to the MCP SDK's ``AuthenticatedUser``, so
            a Streamable HTTP session is only usable with the token principal that
            created it.
    """

    def __init__(
        self, app: Any, validator: TokenValidator, *, required: bool = True,
        forward_token: bool = False, realm: str | None = "agentguard",
        resource_metadata: str | None = None, required_scopes: Iterable[str] = (),
        exempt_paths: Iterable[str] = ("/.well-known/oauth-protected-resource",),
        bind_session: bool = True,
    ) -> None:
        self.app = app
        self.validator = validator
        self.required = required
        self.forward_token = forward_token
        self.realm = realm
        self.resource_metadata = resource_metadata
        self.required_scopes = tuple(required_scopes)
        self.exempt_paths = tuple(exempt_paths)
        self.bind_session = bind_session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        if kind == "http" and self._exempt(scope):
            await self.app(self._strip(scope), receive, send)
            return
        values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
        if len(values) > 1:
            await self._refuse(scope, send, 400, "invalid_request",
                               "more than one Authorization header")
            return
        raw = values[0].decode("latin-1") if values else ""
        scheme, _, credentials = raw.strip().partition(" ")
        if scheme.lower() != "bearer":
            if self.required:
                await self._refuse(scope, send, 401, None, "a bearer token is required")
                return
            await self.app(self._inner(scope, None), receive, send)
            return
        token_text = credentials.strip()
        if not token_text or any(c.isspace() for c in token_text):
            await self._refuse(scope, send, 400, "invalid_request",
                               "the Authorization header is not 'Bearer <token>'")
            return
        try:
            token = await self.validator.validate(token_text)
        except TokenError as exc:
            logger.debug("refused a bearer token: %s", exc.description)
            await self._refuse(scope, send, 401, exc.error, exc.description)
            return
        except KeySetUnavailable as exc:
            logger.warning("refusing a request: %s", exc.description)
            await self._refuse(scope, send, 503, "temporarily_unavailable",
                               "the token cannot be checked right now", challenge=False)
            return
        missing = [s for s in self.required_scopes if s not in token.scopes]
        if missing:
            await self._refuse(scope, send, 403, "insufficient_scope",
                               f"the token lacks the scope {' '.join(missing)}",
                               scope_param=" ".join(self.required_scopes))
            return
        inner = self._inner(scope, token)
        if kind != "http":
            await self.app(inner, receive, send)
            return
        state = inner["state"]
        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the app's own response was replaced by a challenge: drop it
            challenge = state.get(CHALLENGE_KEY)
            if message["type"] == "http.response.start" and isinstance(
                    challenge, StepUpChallenge):
                replaced = True
                await send_challenge(send, challenge, realm=self.realm,
                                     resource_metadata=self.resource_metadata)
                return
            await send(message)

        await self.app(inner, receive, guarded_send)

    # ------------------------------------------------------------------ helpers
    def _exempt(self, scope: Scope) -> bool:
        """A read of a public document (exact prefix or below it, no ``..`` tricks)."""
        path = str(scope.get("path", ""))
        if scope.get("method") not in ("GET", "HEAD", "OPTIONS") or ".." in path.split("/"):
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.exempt_paths)

    def _strip(self, scope: Scope) -> Scope:
        if self.forward_token:
            return scope
        inner = dict(scope)
        inner["headers"] = [(k, v) for k, v in scope.get("headers", ())
                            if k.lower() != b"authorization"]
        return inner

    def _inner(self, scope: Scope, token: VerifiedToken | None) -> Scope:
        inner = self._strip(scope)
        if inner is scope:
            inner = dict(scope)
        # A fresh state dict per request: claims never leak into app-wide state.
        inner["state"] = {**(scope.get("state") or {}), STATE_KEY: token}
        if token is not None and self.bind_session:
            from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
            from starlette.authentication import AuthCredentials

            inner["user"] = AuthenticatedUser(access_token(token, None))
            inner["auth"] = AuthCredentials(list(token.scopes))
        return inner

    async def _refuse(self, scope: Scope, send: Send, status: int, error: str | None,
                      description: str, *, challenge: bool = True,
                      scope_param: str | None = None) -> None:
        if scope.get("type") == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        params = []
        if self.realm is not None:
            params.append(f"realm={_quoted(self.realm)}")
        if error is not None:
            params.append(f'error="{error}"')
            params.append(f'error_description="{_nqs(description)}"')
        if scope_param is not None:
            params.append(f"scope={_quoted(scope_param)}")
        if self.resource_metadata is not None:
            params.append(f"resource_metadata={_quoted(self.resource_metadata)}")
        header = ("Bearer " + ", ".join(params)).rstrip() if challenge else None
        await _respond(send, status, {"error": error or "unauthorized",
                                      "error_description": _nqs(description)}, header)
