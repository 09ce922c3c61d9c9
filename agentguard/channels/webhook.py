"""A generic signed webhook channel, for teams that route approvals through their own tools.

Outgoing: each held call is POSTed as JSON to a URL; when it settles, a second POST says how.
Incoming: the decision comes back to a callback endpoint (a Starlette app, served by
``agentguard serve --webhook`` or mounted in another server). Both directions are signed the
same way, with a shared secret::

    X-Agentguard-Timestamp: <unix seconds>
    X-Agentguard-Signature: v1=<hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>

A receiver rejects a timestamp more than 5 minutes away from its clock and a (timestamp,
signature) pair it has already seen. A POST that fails (connection error, non-2xx answer)
makes the channel ``unreachable``: the call is refused unless another channel answers.

The callback body is ``{"request_id", "approver", "decision": "approve" | "deny",
"reason"?, "grant_ttl"?}``. The signature is what vouches for ``approver``: whoever holds
the secret speaks for the approvers it names, so give each integration its own secret and
list its identities (optionally prefixed, see ``identity_prefix``) in the policy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentguard.approvals import cast_vote, request_event
from agentguard.audit.base import AuditSink
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.render import denial_reason, render_request, render_status
from agentguard.errors import ConfigError
from agentguard.sanitize import render_args
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ReplayCache",
    "WebhookCallback",
    "WebhookChannel",
    "WebhookDecision",
    "check_signature",
    "read_body",
    "request_payload",
    "sign",
]

log = logging.getLogger("agentguard.channels.webhook")

SIGNATURE_HEADER = "X-Agentguard-Signature"
TIMESTAMP_HEADER = "X-Agentguard-Timestamp"
WINDOW = 300.0
MAX_BODY = 256 * 1024


# --------------------------------------------------------------------------- signing


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ConfigError("the webhook secret is empty")
    return key


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "v1:{timestamp}:{body}")>``."""
    message = b"v1:" + str(timestamp).encode() + b":" + body
    return "v1=" + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def check_signature(
    secret: str | bytes, timestamp: str | None, signature: str | None, body: bytes, *,
    now: float, window: float = WINDOW,
) -> str | None:
    """Why a signed body must be rejected (None when the signature and timestamp are good)."""
    if not timestamp or not signature:
        return "missing signature or timestamp header"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "malformed timestamp"
    if abs(now - int(timestamp)) > window:
        return "timestamp outside the 5-minute window"
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
        return "bad signature"
    return None


class ReplayCache:
    """Remembers signed messages already accepted, until they could no longer verify.

    In memory: one serving process (or one Socket Mode connection) sees each delivery.
    Several replicas behind a load balancer need a shared cache (a store table).

    Args:
        max_entries: Entries kept before new ones are refused; refusing (fail closed) is
            safer than forgetting entries that could still be replayed.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()  # Socket Mode calls in from its worker threads

    def claim(self, key: str, *, now: float, ttl: float = 2 * WINDOW) -> bool:
        """Record ``key``; False if it was already recorded (a replay) or the cache is full."""
        with self._lock:
            if key in self._seen and self._seen[key] > now:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                if len(self._seen) >= self.max_entries:
                    return False
            self._seen[key] = now + ttl
            return True


# --------------------------------------------------------------------------- outgoing


def request_payload(request: ApprovalRequest) -> dict[str, Any]:
    """The JSON describing a held call. ``args`` are the exact values that will run; show
    ``args_display`` (escaped) or ``text`` to humans, never raw ``args``."""
    call = request.call
    raw_context = call.get("context")
    context: Mapping[str, Any] = raw_context if isinstance(raw_context, Mapping) else {}
    spec = request.approval
    return {
        "id": request.id,
        "tool": call.get("tool"),
        "server": call.get("server"),
        "principal": call.get("principal"),
        "acting_for": context.get("acting_for"),
        "source_ip": context.get("source_ip"),
        "session_id": call.get("session_id"),
        "privilege": request.privilege,
        "labels": list(request.labels),
        "rule_id": request.rule_id,
        "reason": request.reason,
        "args": call.get("args", {}),
        "args_display": render_args(call.get("args", {}), limit=2**62)[0],
        "call_hash": request.call_hash,
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "approvers": list(spec.approvers),
        "quorum": spec.quorum,
        "separation_of_duties": spec.separation_of_duties,
        "max_grant": spec.max_grant,
        "status": request.status,
        "text": render_request(request, now=request.created_at),
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is a failure: we sign for one URL only


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookChannel:
    """POST held calls to a URL; decisions come back through :class:`WebhookCallback`.

    Args:
        url: Where to POST (http or https).
        secret: Shared HMAC secret.
        callback_url: Told to the receiver, so it knows where to send the decision.
        name: Channel name (rules may name it in ``channels:``).
        timeout: Seconds to wait for the POST.
        clock: Unix time source.
    """

    verified = True

    def __init__(
        self, url: str, secret: str | bytes, *, callback_url: str | None = None,
        name: str = "webhook", timeout: float = 10.0, clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"webhook URL must be http(s), got {url!r}")
        self.url = url
        self._secret = _key(secret)
        self.callback_url = callback_url
        self.name = name
        self.timeout = timeout
        self.clock = clock

    def _post(self, document: Mapping[str, Any]) -> int:
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        stamp = str(int(self.clock()))
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "agentguard-webhook/1",
            TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(self._secret, stamp, body)})
        with _OPENER.open(req, timeout=self.timeout) as response:
            return response.status

    async def _send(self, document: Mapping[str, Any]) -> str | None:
        """POST ``document``; the failure, or None."""
        try:
            status = await anyio.to_thread.run_sync(self._post, document, abandon_on_cancel=True)
        except urllib.error.HTTPError as exc:
            return f"the webhook answered HTTP {exc.code}"
        except Exception as exc:  # connection refused, timeout, DNS: all mean unreachable
            return f"the webhook POST failed: {type(exc).__name__}: {exc}"
        return None if 200 <= status < 300 else f"the webhook answered HTTP {status}"

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """POST the request. Yields ``unreachable`` if the POST fails; decisions arrive
        through the callback endpoint, straight into the store."""
        problem = await self._send({"type": "approval_request", "request":
                                    request_payload(request), "callback_url": self.callback_url})
        if problem is not None:
            log.warning("webhook %s unreachable for request %s: %s", self.name, request.id,
                        problem)
            yield ChannelAnswer(kind="unreachable", channel=self.name, reason=problem)

    async def settled(self, request: ApprovalRequest) -> None:
        """POST how the request ended (best effort)."""
        problem = await self._send({
            "type": "approval_settled", "request_id": request.id, "status": request.status,
            "decided_by": list(request.decided_by), "decided_at": request.decided_at,
            "text": render_status(request)})
        if problem is not None:
            log.warning("webhook %s: could not report the outcome of %s: %s", self.name,
                        request.id, problem)


# --------------------------------------------------------------------------- incoming


class WebhookDecision(BaseModel):
    """The body of a decision sent to the callback endpoint."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=16, max_length=128)
    approver: str = Field(min_length=1, max_length=256)
    decision: Literal["approve", "deny"]
    reason: str = Field(default="", max_length=2000)
    grant_ttl: float = Field(default=0.0, ge=0)


class WebhookCallback:
    """The signed decision endpoint. Verifies, rejects replays, then votes like any channel.

    Args:
        store: The store the guard uses.
        audit: Audit sink (refused votes and replays are recorded).
        secret: Shared HMAC secret.
        channel: Channel name recorded with votes.
        identity_prefix: Prepended to ``approver`` (e.g. ``"pagerduty:"``), so that one
            integration cannot name identities of another channel.
        clock: Unix time source.
        replay_cache: Where accepted deliveries are remembered.
    """

    def __init__(
        self, *, store: Store, audit: AuditSink, secret: str | bytes, channel: str = "webhook",
        identity_prefix: str = "", clock: Callable[[], float] = time.time,
        replay_cache: ReplayCache | None = None, key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self._secret = _key(secret)
        self.key = key  # serve's own key: signs the votes whose delivery it verified
        self.channel = channel
        self.identity_prefix = identity_prefix
        self.clock = clock
        self.replay_cache = replay_cache or ReplayCache()

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Process one delivery; return (HTTP status, JSON answer)."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp, signature = lower.get(TIMESTAMP_HEADER.lower()), lower.get(
            SIGNATURE_HEADER.lower())
        now = self.clock()
        problem = check_signature(self._secret, timestamp, signature, body, now=now)
        if problem is not None:
            log.warning("webhook callback rejected: %s", problem)
            return 401, {"ok": False, "error": problem}
        try:
            decision = WebhookDecision.model_validate_json(body)
        except ValidationError as exc:
            return 400, {"ok": False, "error": f"invalid decision: {exc.error_count()} error(s)"}
        if not self.replay_cache.claim(f"{timestamp}:{signature}", now=now):
            log.warning("webhook callback replayed for request %s; ignored", decision.request_id)
            await self._audit_replay(decision)
            return 409, {"ok": False, "error": "replayed delivery ignored"}
        request, problem = await cast_vote(
            store=self.store, audit=self.audit, request_id=decision.request_id,
            approver=self.identity_prefix + decision.approver,
            approve=decision.decision == "approve", channel=self.channel,
            reason=(decision.reason if decision.decision == "approve"
                    else denial_reason(decision.reason)),
            grant_ttl=decision.grant_ttl, now=now, key=self.key)
        if problem is not None:
            return 403, {"ok": False, "error": problem,
                         "status": request.status if request else None}
        assert request is not None
        return 200, {"ok": True, "status": request.status}

    async def _audit_replay(self, decision: WebhookDecision) -> None:
        request = await self.store.get_request(decision.request_id)
        event = (request_event(request, "vote.rejected") if request is not None
                 else {"type": "vote.rejected", "request_id": decision.request_id})
        event.update(approver=self.identity_prefix + decision.approver, channel=self.channel,
                     detail="replayed webhook delivery ignored")
        try:
            self.audit.append(event)
        except Exception:
            log.exception("could not audit a replayed webhook delivery")

    def routes(self, path: str = "/webhook/callback") -> list[Any]:
        """Starlette routes to mount in a server (``agentguard serve``, the HTTP proxy)."""
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def endpoint(request: Request) -> JSONResponse:
            body = await read_body(request, MAX_BODY)
            if body is None:
                return JSONResponse({"ok": False, "error": "body too large"}, status_code=413)
            status, answer = await self.handle(body, request.headers)
            return JSONResponse(answer, status_code=status)

        return [Route(path, endpoint, methods=["POST"])]

    def app(self, path: str = "/webhook/callback") -> Any:
        """A Starlette app serving only the callback."""
        from starlette.applications import Starlette

        return Starlette(routes=self.routes(path))


async def read_body(request: Any, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
