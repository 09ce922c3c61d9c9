"""What the relay needs of an upstream connection: the :class:`Lane` protocol.

An upstream's lane is the SDK client's transport *and* the relay's channel: it carries every
message the SDK client writes (so it can learn the envelope the SDK stamps on a request), and
it sends a relayed request under a proxy-owned id, handing the answer to a callback from the
loop, without the SDK's session layer. Two lanes implement it:

- the stdio lane, :class:`~agentguard.proxy.upstream_io.RawStdio` (the upstream process on
  raw pipes);
- the HTTP lane, :class:`~agentguard.proxy.upstream_http.HttpLane` (the SDK's Streamable HTTP
  transport, relayed calls on raw keep-alive HTTP/1.1 where the SDK would send the same bytes).

The relay (:mod:`agentguard.proxy.relay`, :mod:`agentguard.proxy.stdio_relay`, the HTTP relay)
uses only what is declared here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from agentguard.proxy.jsontypes import JsonObject

__all__ = ["AnswerCallback", "Lane"]

AnswerCallback = Callable[[JsonObject | None], None]
"""Called from the loop with a relayed request's JSON-RPC answer, or None: the connection
closed first (the request may or may not have run)."""


class Lane(Protocol):
    """One upstream connection, as the relay uses it."""

    closed: bool
    """True once the connection is gone: nothing more can be relayed on it."""

    carries_headers: bool
    """The lane sends the SDK's per-request HTTP headers (False on stdio: the relay builds
    none for it)."""

    envelope: JsonObject | None
    """The reserved ``_meta`` keys the SDK client stamps on a 2026-07-28 request, learned from
    its first stamped request (None until then: the relay must not send without it)."""

    def start(self, method: str, params: JsonObject, headers: dict[str, str] | None,
              on_answer: AnswerCallback) -> str | None:
        """Send a request under a proxy-owned id without waiting.

        Args:
            method: The JSON-RPC method.
            params: Its ``params``, as the SDK client would send them.
            headers: The SDK's per-request HTTP headers (None where not
                :attr:`carries_headers`).
            on_answer: Gets the answer, once (never after :meth:`forget`).

        Returns:
            The id the request was sent under, or None: the lane is closed (nothing sent).
        """
        ...

    def forget(self, rid: str) -> None:
        """Cancel a relayed request: its callback is dropped and the upstream told (stdio and
        handshake-era HTTP: ``notifications/cancelled``; 2026-07-28 HTTP: its response stream
        is closed)."""
        ...

    def pending(self) -> int:
        """How many relayed requests await their answer."""
        ...


if TYPE_CHECKING:
    from agentguard.proxy.upstream_http import HttpLane
    from agentguard.proxy.upstream_io import RawStdio

    def _both_lanes_conform(stdio: RawStdio, http: HttpLane) -> tuple[Lane, Lane]:
        return stdio, http  # mypy checks each against the protocol
