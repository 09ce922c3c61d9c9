"""What the ``--listen`` listener accepts as a request: its limits, head checks and refusals.

:func:`request_from_head` turns a parsed request head (llhttp has already refused the
smuggling shapes it knows: ``Content-Length`` with ``Transfer-Encoding``, duplicate or
malformed lengths, obs-fold, bare CR/LF, NUL) into a :class:`Request` carrying its ASGI
scope, or raises :class:`Refused` with the status to answer: ``400`` for a
``Transfer-Encoding`` other than ``chunked`` (or on HTTP/1.0), upgrades, ``CONNECT``, a
missing or repeated ``Host`` and other HTTP versions; ``413`` for a body announced over
:attr:`Limits.max_body_bytes`; ``417`` for an unknown expectation. :func:`refusal` is the
answer written before the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools
from mcp.types import INVALID_REQUEST

from agentguard.errors import AgentGuardError
from agentguard.proxy.asgi_bridge import forwarded_client
from agentguard.proxy.http_frames import jsonrpc_error
from agentguard.proxy.wire import WireError

__all__ = ["Limits", "Refused", "Request", "refusal", "request_from_head"]


@dataclass(frozen=True)
class Limits:
    """What clients may make the listener hold.

    Attributes:
        max_body_bytes: Largest request body (the config's ``max_message_bytes``).
        max_head_bytes: Largest request line plus headers.
        max_headers: Most header lines in one request.
        read_timeout: Seconds for a request, head and body, to arrive once it began (and
            for the first request to begin once the connection is open).
        keep_alive: Seconds an idle connection stays open (above clients' own idle expiry,
            httpx 5 s, Node 4 s, so a request never crosses our close).
        max_queued: Pipelined requests read ahead of the one being answered.
        max_connections: Open client connections; one accepted beyond it is answered ``503``
            and closed at once (see :class:`~agentguard.proxy.http_listener.Listener`).
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    read_timeout: float = 30.0
    keep_alive: float = 75.0
    max_queued: int = 8
    max_connections: int = 1024


class Refused(AgentGuardError):
    """A request the listener will not serve: answer :attr:`status`, then close.

    Args:
        status: The HTTP status of the refusal.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Request:
    """One request read by the listener: its scope, and its body as it arrives.

    Args:
        scope: The ASGI scope (None for a refusal queued in the request's turn).
        refusal: The status of that refusal (0: a request to serve).

    Attributes:
        body: The body's parts so far.
        size: Bytes of body so far.
        complete: The whole request has arrived (a refusal is complete at once).
        expect: ``100 Continue`` is still owed before the body.
        head: The method is ``HEAD`` (the answer has no body).
        http10: The request is HTTP/1.0 (no chunked answer, no relay).
        keep_alive: The connection may carry another request after this one.
    """

    __slots__ = ("body", "complete", "expect", "head", "http10", "keep_alive", "refusal",
                 "scope", "size")

    def __init__(self, scope: dict[str, Any] | None, *, refusal: int = 0) -> None:
        self.scope = scope
        self.refusal = refusal
        self.body: list[bytes] = []
        self.size = 0
        self.complete = refusal != 0
        self.expect = self.head = self.http10 = False
        self.keep_alive = True


def request_from_head(parser: httptools.HttpRequestParser, url: bytes,
                      headers: list[tuple[bytes, bytes]], *, limits: Limits,
                      peer: tuple[str, int] | None, sock: tuple[str, int] | None,
                      trusted: tuple[Any, ...]) -> Request:
    """The request whose head ``parser`` just completed.

    Args:
        parser: The parser, at ``on_headers_complete``.
        url: The request target as sent.
        headers: The header lines, names lower-cased.
        limits: The listener's limits.
        peer: The TCP peer ``(host, port)``.
        sock: The listening socket's ``(host, port)``.
        trusted: Networks of reverse proxies whose ``X-Forwarded-*`` headers are believed.

    Raises:
        Refused: the request must not be served (see the module docstring).
    """
    version = parser.get_http_version()
    method = parser.get_method()
    hosts = length = 0
    chunked = expect = False
    for name, value in headers:
        if name not in _HEAD_FIELDS:
            continue  # most of them: one lookup instead of five comparisons
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            length = int(value)  # llhttp let through one, digits only
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked" or version != "1.1":
                raise Refused(400)
            chunked = True
        elif name == b"expect":
            if value.strip().lower() != b"100-continue":
                raise Refused(417)
            expect = True
        elif name == b"upgrade":
            raise Refused(400)
    if version not in ("1.0", "1.1") or method == b"CONNECT" or hosts > 1 or \
            (hosts == 0 and version == "1.1"):
        raise Refused(400)
    if length > limits.max_body_bytes:
        raise Refused(413)
    try:
        if url[:1] == b"/":  # origin form; llhttp checked its characters
            raw_path, _, query = url.partition(b"?")
            raw_path = raw_path.partition(b"#")[0]
            query = query.partition(b"#")[0]
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        raise Refused(400) from None
    client, scheme = forwarded_client(peer, headers, trusted) if trusted else (peer, "http")
    req = Request({"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                   "http_version": version, "method": method.decode("ascii"),
                   "scheme": scheme, "path": unquote(path) if "%" in path else path,
                   "raw_path": raw_path, "query_string": query, "root_path": "",
                   "headers": headers, "client": client, "server": sock})
    req.http10 = version == "1.0"
    req.head = method == b"HEAD"
    req.keep_alive = parser.should_keep_alive()
    req.expect = expect and (length > 0 or chunked)
    return req


_HEAD_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect",
                          b"upgrade"})
"""The header fields :func:`request_from_head` reads."""

_STATUS_TEXT = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
                417: b"Expectation Failed", 431: b"Request Header Fields Too Large",
                503: b"Service Unavailable"}


def refusal(status: int, limits: Limits) -> bytes:
    """The whole answer refusing a request with ``status``, ``Connection: close``.

    A ``413`` carries the JSON-RPC error the ASGI stack gives an oversized body; a ``503``
    (too many connections) says when to retry.
    """
    extra = b""
    if status == 413:
        body = jsonrpc_error(WireError(INVALID_REQUEST, "Invalid Request: message larger "
                                       f"than {limits.max_body_bytes} bytes"))
        kind = b"application/json"
    else:
        body, kind = _STATUS_TEXT.get(status, b"Bad Request"), b"text/plain; charset=utf-8"
        if status == 503:
            extra = b"retry-after: 1\r\n"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%bconnection: "
            b"close\r\n\r\n%b" % (status, _STATUS_TEXT.get(status, b""), kind, len(body),
                                  extra, body))
