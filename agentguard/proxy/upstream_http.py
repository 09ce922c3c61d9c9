"""The lane of a Streamable HTTP upstream: relayed calls on raw keep-alive HTTP/1.1.

:class:`HttpLane` is a :class:`~agentguard.proxy.upstream_io.SdkTransportLane` (the SDK client keeps
its own transport for everything else) whose relayed requests go out through
:class:`~agentguard.proxy.http1.Http1Pool` instead of ``httpx`` and the SDK's transport. It
sends what the SDK would send (the same JSON body, the SDK's per-request headers from its
stamp, the transport's ``accept``/``content-type``, the configured headers) and reads the
answer the way the SDK does: a JSON body, or an event stream whose notifications are handed
to the SDK session exactly as if its own transport had received them.

Only 2026-07-28 requests (stateless: no session to carry) to plain ``http://`` endpoints
reached without an environment proxy and without user info in the URL take the lane;
anything else (the handshake era, TLS, proxies, credentials, a header that cannot be written
verbatim) stays on the SDK transport. A redirect is handed to the SDK
transport too, which follows it within the origin, and switches the lane off.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.client.streamable_http import DEFAULT_MAX_SSE_EVENT_SIZE
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    jsonrpc_message_adapter,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from agentguard.proxy.http1 import Http1Pool, PendingPost, UnsafeHeader
from agentguard.proxy.sse import SseDecoder, SseTooLarge
from agentguard.proxy.upstream_io import SdkTransportLane
from agentguard.proxy.wire import decode, encode

__all__ = ["HttpLane", "dropped_request", "raw_target"]

logger = logging.getLogger(__name__)

_TRANSPORT_HEADERS = {"accept": "application/json, text/event-stream",
                      "content-type": "application/json"}


def raw_target(url: str) -> tuple[str, int, str] | None:
    """``(host, port, path)`` when ``url`` can be served by the raw lane, else None.

    Plain ``http`` only, no user info, and no environment proxy that ``httpx`` would use
    for this host (the SDK's client honours ``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme != "http" or not host or parts.username is not None or parts.fragment:
        return None
    proxies = urllib.request.getproxies_environment()
    if (proxies.get("http") or proxies.get("all")) and \
            not urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, path


def dropped_request(detail: str) -> str:
    """Why a request to an HTTP upstream has no answer (after ``upstream server 'x'``)."""
    return (f"ended the request without an answer ({detail}); the request may or may not "
            "have taken effect")


def _version(headers: Mapping[str, str] | None) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == "mcp-protocol-version":
            return value
    return None


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


class HttpLane(SdkTransportLane):
    """A Streamable HTTP transport whose relayed calls take raw HTTP/1.1.

    Args:
        inner: The SDK transport (``streamable_http_client`` context manager).
        url: The upstream endpoint.
        headers: Headers configured for the upstream (sent on every request).
        server: Upstream name, for error messages.
    """

    def __init__(self, inner: Any, url: str, headers: Mapping[str, str], server: str) -> None:
        super().__init__(inner)
        self._server = server
        self._target = raw_target(url)
        merged = {k.lower(): v for k, v in headers.items()}
        merged.update(_TRANSPORT_HEADERS)
        self._headers = merged
        self._pool: Http1Pool | None = None
        self._exchanges: dict[str, PendingPost] = {}

    async def __aenter__(self) -> Any:
        pair = await super().__aenter__()
        if self._target is not None and self._tg is not None:
            host, port, path = self._target
            try:
                self._pool = Http1Pool(host, port, path, self._headers,
                                       spawn=self._spawn)
            except UnsafeHeader as exc:
                logger.info("upstream %r: relayed calls use the SDK transport (%s)",
                            self._server, exc)
            else:
                self._stack.callback(self._pool.close)
        return pair

    def _spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the lane's task group (the pool's background work)."""
        assert self._tg is not None
        self._tg.start_soon(fn)

    @property
    def raw(self) -> bool:
        """True while relayed calls bypass the SDK transport."""
        return self._pool is not None and not self._pool.closed

    def _send_nowait(self, message: dict[str, Any], headers: dict[str, str] | None) -> None:
        pool = self._pool
        rid = message.get("id")
        if pool is None or pool.closed or not isinstance(rid, str) or \
                _version(headers) not in MODERN_PROTOCOL_VERSIONS:
            # Handshake-era requests carry the SDK transport's session (and may be answered
            # with requests back to the client on the same stream): the SDK's business.
            super()._send_nowait(message, headers)
            return
        logger.debug("relaying %s to %r on raw HTTP", message.get("method"), self._server)
        sink = _CallSink(self, rid, message, headers)
        try:
            exchange = pool.post(encode(message), {k.lower(): v for k, v in
                                                   (headers or {}).items()}, sink)
        except UnsafeHeader as exc:
            logger.info("upstream %r: %s; relaying through the SDK transport", self._server, exc)
            super()._send_nowait(message, headers)
            return
        if rid in self._callbacks:  # not already answered (a closed pool fails at once)
            self._exchanges[rid] = exchange

    def forget(self, rid: str) -> None:
        """Abandon a relayed call: on this wire, closing its response stream cancels it."""
        exchange = self._exchanges.pop(rid, None)
        if exchange is None:
            super().forget(rid)
            return
        self._callbacks.pop(rid, None)
        exchange.abort()

    # ------------------------------------------------------------------ sink side

    def _answer(self, rid: str, answer: dict[str, Any]) -> None:
        self._exchanges.pop(rid, None)
        self._resolve(rid, answer)

    def _resolve(self, rid: str, answer: dict[str, Any]) -> bool:
        error = answer.get("error")
        if isinstance(error, dict) and error.get("code") == CONNECTION_CLOSED:
            # The SDK transport's word for one abandoned request: say it as the full path does.
            answer = _error(rid, INTERNAL_ERROR, f"upstream server {self._server!r} "
                            f"{dropped_request(str(error.get('message', '')))}")
        return super()._resolve(rid, answer)

    def _to_session(self, message: Any) -> None:
        """Hand a message from a relayed call's event stream to the SDK session."""
        stream, tg = self._session_send, self._tg
        if stream is None or tg is None:
            return
        item = SessionMessage(message)
        try:
            stream.send_nowait(item)
        except anyio.WouldBlock:
            tg.start_soon(self._deliver, item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _deliver(self, item: SessionMessage) -> None:
        # A session that went away meanwhile must not take the transport's task group down.
        stream = self._session_send
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            if stream is not None:
                await stream.send(item)

    def _redirected(self, rid: str, message: dict[str, Any],
                    headers: dict[str, str] | None) -> None:
        """The endpoint redirects: let the SDK transport (which follows it) take over."""
        self._exchanges.pop(rid, None)
        if self._pool is not None:
            logger.info("upstream %r redirects; relayed calls use the SDK transport from now on",
                        self._server)
            self._pool.close()
            self._pool = None
        if rid in self._callbacks:
            SdkTransportLane._send_nowait(self, message, headers)


class _CallSink:
    """Turns one HTTP response into the JSON-RPC answer of one relayed call."""

    def __init__(self, lane: HttpLane, rid: str, message: dict[str, Any],
                 headers: dict[str, str] | None) -> None:
        self._lane = lane
        self._rid = rid
        self._message = message
        self._headers = headers
        self._status = 0
        self._type = ""
        self._chunks: list[bytes] = []
        self._sse: SseDecoder | None = None
        self._done = False

    def started(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self._type = headers.get("content-type", "").lower()
        if 200 <= status < 300 and self._type.startswith("text/event-stream"):
            self._sse = SseDecoder(DEFAULT_MAX_SSE_EVENT_SIZE)

    def body(self, chunk: bytes) -> None:
        if self._done:
            return
        if self._sse is None:
            self._chunks.append(chunk)
            return
        try:
            events = self._sse.feed(chunk)
        except SseTooLarge as exc:
            self._finish(_error(self._rid, INTERNAL_ERROR, f"upstream event stream: {exc}"))
            return
        for kind, data in events:
            if kind == "message" and data:
                self._event(data)
            if self._done:
                return

    def finished(self) -> None:
        if self._done:
            return
        status, rid = self._status, self._rid
        if self._sse is not None:
            self._finish(_error(rid, INTERNAL_ERROR, (
                f"upstream server {self._lane._server!r} "
                f"{dropped_request('SSE stream ended without a response')}")))
        elif status == 202:
            self._finish(_error(rid, INVALID_REQUEST,
                                "server answered a request with 202 Accepted"))
        elif 300 <= status < 400:
            self._done = True
            self._lane._redirected(rid, self._message, self._headers)
        elif status >= 400:
            self._finish(self._http_error(status))
        elif self._type.startswith("application/json"):
            self._finish(self._json_answer(b"".join(self._chunks)))
        else:
            self._finish(_error(rid, INVALID_REQUEST,
                                f"Unexpected content type: {self._type}"))

    def failed(self, error: BaseException, sent: bool) -> None:
        if self._done:
            return
        name = self._lane._server
        if sent:
            why = (f"upstream server {name!r} dropped the connection during the request "
                   f"({error}); the request may or may not have taken effect")
        else:
            why = f"upstream server {name!r} could not be reached: {error}"
        self._finish(_error(self._rid, INTERNAL_ERROR, why))

    # ------------------------------------------------------------------ helpers

    def _finish(self, answer: dict[str, Any]) -> None:
        self._done = True
        self._lane._answer(self._rid, answer)

    def _event(self, data: str) -> None:
        try:
            message = jsonrpc_message_adapter.validate_json(data, by_name=False)
        except Exception:
            logger.warning("upstream %r sent an invalid event-stream message", self._lane._server)
            return
        if getattr(message, "id", None) == self._rid and not hasattr(message, "method"):
            # The stream's remaining bytes are ignored; the connection is reused once the
            # server ends the response, as the SDK's server does right after the answer.
            self._finish(message.model_dump(by_alias=True, mode="json", exclude_none=True))
            return
        self._lane._to_session(message)

    def _json_answer(self, body: bytes) -> dict[str, Any]:
        try:
            value = decode(body)
        except ValueError:
            value = None
        if isinstance(value, dict) and value.get("id") == self._rid and \
                ("result" in value or "error" in value):
            return value
        try:  # the SDK's own words for a body it cannot read
            jsonrpc_message_adapter.validate_json(body, by_name=False)
        except ValidationError as exc:
            return _error(self._rid, PARSE_ERROR, f"Failed to parse JSON response: {exc}")
        # A well-formed message that does not answer this request: the SDK would wait for
        # an answer that never comes; say so instead.
        return _error(self._rid, INTERNAL_ERROR, (
            f"upstream server {self._lane._server!r} answered with a message that is not the "
            "response to this request"))

    def _http_error(self, status: int) -> dict[str, Any]:
        if self._type.startswith("application/json"):
            try:
                value = json.loads(b"".join(self._chunks))
            except ValueError:
                value = None
            error = value.get("error") if isinstance(value, dict) else None
            if isinstance(error, dict) and isinstance(error.get("code"), int) and \
                    isinstance(error.get("message"), str):
                return {"jsonrpc": "2.0", "id": self._rid, "error": error}
        if status == 404:
            return _error(self._rid, METHOD_NOT_FOUND, "Not Found")
        return _error(self._rid, INTERNAL_ERROR, "Server returned an error response")
