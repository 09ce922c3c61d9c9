"""The ``--listen`` HTTP/1.1 server: asyncio + httptools, the relay first, ASGI for the rest.

Why we own it: behind uvicorn the relay answered inside the ASGI stack (uvicorn's request
cycle, ASGI messages, HardenedASGI reading the body, head and body in two writes), and
uvicorn's cheaper hooks are private. Here a complete ``POST /mcp`` goes to the relay before
any ASGI app runs (:mod:`agentguard.proxy.http_direct`: planned from the parser's callback,
answered from the upstream's, in one write); everything the relay declines, and every other
request, is served by the ASGI app through :mod:`agentguard.proxy.asgi_bridge`, body
replayed. The parts: :mod:`agentguard.proxy.http_request` (limits, head checks, refusals),
:mod:`agentguard.proxy.http_connection` (one connection: parse, queue, answer in order), and
:class:`Listener` here (accept, the connection limit, shutdown). Measured on the 2-vCPU dev
VM (shared, load 4-8), 2026-12-05:

* ``benchmarks/bench_http_listener.py`` (raw keep-alive client, allowed ``get_status``
  relayed to the example ops server over HTTP; 3 runs of 4,000 calls): proxy CPU per call
  0.325-0.327 ms under uvicorn (main) against 0.255-0.273 ms here (-54 to -72 µs); p50 over
  direct 1.41-1.52x against 1.34-1.46x.
* ``benchmarks/bench_proxy.py --calls 1000`` (the official MCP client; 2 runs each): proxy
  CPU per HTTP call 0.477-0.487 ms (main) against 0.331-0.341 ms; p50 over direct
  1.13-1.20x against 1.01-1.09x.
* ``benchmarks/bench_http_server.py`` (the server alone, trivial answer; 2 runs each):
  server CPU per request: bare httptools protocol 6-7 µs, uvicorn + ASGI app 35-43 µs, this
  listener through the ASGI bridge 35-37 µs, its direct route 30-35 µs (with the JSON parse
  and answer encoding the relay needs).
* Later the same day, with handshake-era sessions on the direct route and less Python per
  call (``bench_http_listener.py --calls 3000 --rounds 4``, 3 runs per era): proxy CPU per
  call 0.173-0.277 ms against main's 0.210-0.297 ms for 2026-07-28 calls (0.82-0.99x), and
  0.237-0.320 ms against 0.353-0.400 ms for a session's calls (0.67-0.81x).

Network-facing, so strict and bounded (each limit has an attack test in
``tests/proxy/test_http_listener.py`` and ``test_http_listener_proxy.py``):

* llhttp strict parsing: ``Content-Length`` with ``Transfer-Encoding``, a duplicate or
  malformed ``Content-Length``, obs-fold, bare CR/LF and NUL are refused ``400`` and the
  connection closed; so are a ``Transfer-Encoding`` other than ``chunked`` (or on
  HTTP/1.0), upgrades and ``CONNECT``, a missing or repeated ``Host``, other HTTP versions.
* Head limits (``431``): :attr:`Limits.max_head_bytes` of request line and headers,
  :attr:`Limits.max_headers` headers. Body limit (``413`` with the JSON-RPC error the
  ASGI stack gives, connection closed): the config's ``max_message_bytes``, checked against
  ``Content-Length`` before ``100 Continue`` and while a chunked body arrives.
* Time limits: a request (head and body) must arrive within :attr:`Limits.read_timeout`
  of its first bytes (a slow drip does not extend it; ``408``, in turn); an idle
  keep-alive connection closes after :attr:`Limits.keep_alive`.
* Pipelined requests are answered in order, one at a time; reading pauses while
  :attr:`Limits.max_queued` wait, or bodies over :attr:`Limits.max_body_bytes` in all. A
  client that hangs up makes ``receive`` answer ``http.disconnect`` (a held call is then
  cancelled, :mod:`agentguard.proxy.http_cancel`); a relayed call is abandoned upstream
  (the upstream is told it was cancelled).
* At most :attr:`Limits.max_connections` open connections (the config's
  ``max_connections``); see :class:`Listener` for what happens beyond.
* ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed only from a peer in the
  configured trusted proxies (:func:`forwarded_client`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agentguard.proxy.asgi_bridge import forwarded_client
from agentguard.proxy.http_connection import ClientConnection
from agentguard.proxy.http_direct import DirectRelay
from agentguard.proxy.http_request import Limits

# DirectRelay, Limits and forwarded_client are re-exported: what a caller of the listener
# configures it with.
__all__ = ["DirectRelay", "Limits", "Listener", "forwarded_client"]

logger = logging.getLogger(__name__)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Listener:
    """The ``--listen`` server: one :class:`ClientConnection` per TCP connection.

    Beyond :attr:`Limits.max_connections` open connections, a newly accepted one is
    answered ``503 Service Unavailable`` (``Retry-After: 1``) without reading it and closed
    at once: the refusal costs one write and no state, and the connections already open go
    on undisturbed. (nginx and HAProxy stop accepting instead and leave new clients in the
    kernel's backlog; asyncio's public server has no way to pause accepting, and a prompt
    refusal tells a client more than a hanging connect.) The limit is global, not per peer:
    one client may take every slot until its connections time out (idle ones after
    :attr:`Limits.read_timeout` before a first request, :attr:`Limits.keep_alive` after
    one). Behind a reverse proxy every client shares its address, so a per-peer cap belongs
    in that proxy; directly exposed, put one in front for fairness between clients.

    Args:
        app: The ASGI app for everything the relay does not answer.
        relay: The direct relay entry, or None (everything goes to ``app``).
        limits: Size, time and connection limits.
        trusted_proxies: IPs or CIDRs whose forwarding headers are believed.

    Attributes:
        conns: The open connections (at most :attr:`Limits.max_connections`).
        refused: Connections refused for the limit so far.
    """

    def __init__(self, app: App, *, relay: DirectRelay | None = None,
                 limits: Limits | None = None, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.relay = relay
        self.limits = limits or Limits()
        self.trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted_proxies)
        self.conns: set[ClientConnection] = set()
        self.refused = 0
        self._full = False
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port``; returns the asyncio server (its sockets give the port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientConnection(self), host, port)
        return self._server

    def admit(self, conn: ClientConnection) -> bool:
        """Count ``conn`` among the open connections; False when the limit is reached."""
        if len(self.conns) >= self.limits.max_connections:
            self.refused += 1
            if not self._full:  # once per spell at the limit, not once per connection
                self._full = True
                logger.warning("%d client connections open, the limit (max_connections): "
                               "refusing new ones with 503", len(self.conns))
            return False
        self._full = False
        self.conns.add(conn)
        return True

    async def close(self) -> None:
        """Stop listening, close every connection, and wait for their requests to end."""
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self.conns if c.task is not None]
        for conn in list(self.conns):
            if conn.call is not None:
                conn.call.hang_up()
            conn.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
