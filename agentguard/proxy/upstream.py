"""One upstream MCP server: connection, supervision, forwarding, and what it sends back.

The connection is an ``mcp.Client`` owned by a supervisor task (an SDK client must be entered
and left in the same task). When the upstream process dies, requests fail with
``CONNECTION_CLOSED``; the supervisor then reconnects with backoff, up to ``max_restarts``
times, after which the upstream is cleanly refused.

Requests go out with the typed ``ClientSession.send_request`` so the SDK stamps the 2026-07-28
envelope when the upstream speaks that era. Upstream results are not re-validated against tool
output schemas: the downstream client does that, and upstream errors must pass through as
they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    ErrorData,
    InputRequest,
    InputResponse,
    LoggingMessageNotificationParams,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.errors import AgentGuardError
from agentguard.proxy.answers import LOST, InputRequired, Lost, Result, RpcError, UpstreamAnswer
from agentguard.proxy.config import UpstreamConfig
from agentguard.proxy.upstream_io import LaneBase, RawStdio

__all__ = ["Upstream", "UpstreamEvents", "UpstreamUnavailable", "strip_envelope"]

logger = logging.getLogger(__name__)

R = TypeVar("R")
_ENVELOPE_PREFIX = "io.modelcontextprotocol/"
CONNECT_TIMEOUT = 30.0


class UpstreamUnavailable(AgentGuardError, MCPError):
    """The upstream is down (crashed, restarting, or out of restarts)."""

    def __init__(self, server: str, why: str) -> None:
        super().__init__(code=INTERNAL_ERROR, message=f"upstream server {server!r} {why}")


class UpstreamEvents(Protocol):
    """What the proxy core does with what an upstream sends on its own."""

    async def connected(self, upstream: Upstream) -> None:
        """A (re)connection completed: refresh listings, re-subscribe."""

    async def notification(self, upstream: Upstream, message: Any) -> None:
        """A server notification (list_changed, resource updated, log message...)."""

    async def ask(self, upstream: Upstream, request: InputRequest) -> InputResponse | ErrorData:
        """A server-to-client request (elicitation, sampling, roots) on a legacy upstream."""

    async def log(self, upstream: Upstream, params: LoggingMessageNotificationParams) -> None:
        """A ``notifications/message`` from the upstream."""


def strip_envelope(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Downstream ``_meta`` minus the per-request protocol envelope and progress token.

    The SDK stamps its own envelope and progress token towards the upstream; a downstream
    envelope left in would make a handshake-era upstream refuse the request.
    """
    if not meta:
        return None
    out = {k: v for k, v in meta.items()
           if not k.startswith(_ENVELOPE_PREFIX) and k != "progressToken"}
    return out or None


class Upstream:
    """A supervised connection to one upstream server."""

    def __init__(self, config: UpstreamConfig, events: UpstreamEvents) -> None:
        self.config = config
        self.name = config.name
        self._events = events
        self._client: Client | None = None
        self._era: tuple[Client | None, bool] = (None, False)
        self._ready = anyio.Event()
        self._restart = anyio.Event()
        self._stopping = False
        self._failure: str | None = None
        self.generation = 0
        self.restarts = 0
        self.subscriptions: set[str] = set()
        self._listen_changed = anyio.Event()
        self._listening = anyio.Event()
        #: The connected upstream answered ``subscriptions/listen`` with "method not found".
        self._no_listen = False
        self.lane: LaneBase | None = None
        #: The era the SDK client connects in: the configured mode, or one :meth:`release`
        #: chose (then kept for restarts).
        self.mode: str = config.mode
        self._go = anyio.Event()
        self._go.set()
        self._fallback = False

    # ------------------------------------------------------------------ state

    @property
    def modern(self) -> bool:
        """True when the upstream speaks the 2026-07-28 era."""
        client = self._client
        if client is None:
            return False
        era = self._era
        if era[0] is not client:  # asked per relayed call: once per connection suffices
            era = self._era = (client, client.protocol_version in MODERN_PROTOCOL_VERSIONS)
        return era[1]

    @property
    def failure(self) -> str | None:
        """Why the upstream is refused for good, if it is."""
        return self._failure

    @property
    def client(self) -> Client | None:
        """The live client, if connected."""
        return self._client

    async def wait_connected(self, timeout: float = CONNECT_TIMEOUT) -> Client:
        """The live client, waiting for a (re)connection.

        Raises:
            UpstreamUnavailable: it did not come up in time or is out of restarts.
        """
        if self._client is not None:
            return self._client
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        if self._client is None:
            raise UpstreamUnavailable(self.name, self._failure or "is not connected (restarting)")
        return self._client

    async def resubscribe(self, timeout: float = 10.0) -> None:
        """The set of subscribed resource URIs changed: re-open the 2026 listen stream and
        wait (bounded) until the upstream acknowledged it; at once for an upstream that has
        no listen stream (nothing would acknowledge)."""
        if self._no_listen:
            return
        self._listening = anyio.Event()
        self._listen_changed.set()
        with anyio.move_on_after(timeout):
            await self._listening.wait()

    # ------------------------------------------------------------------ supervision

    def hold(self) -> None:
        """Connect only once :meth:`release` says in which era (before :meth:`run` starts)."""
        self._go = anyio.Event()

    def release(self, client_legacy: bool) -> None:
        """Connect now; a held ``auto`` upstream in the handshake era when its client speaks
        it (``client_legacy``), falling back to ``auto`` if the upstream refuses that era.
        An explicit mode is never overridden."""
        if self._go.is_set():
            return
        if self.config.mode == "auto" and client_legacy:
            self.mode, self._fallback = "legacy", True
        self._go.set()

    def _transport(self) -> LaneBase:
        cfg = self.config
        lane: LaneBase
        if cfg.url is not None:
            # Imported here: a stdio-only proxy starts without the HTTP client lane.
            from agentguard.proxy.http1 import IDLE_EXPIRY
            from agentguard.proxy.upstream_http import HttpLane

            # The SDK's client settings, but idle connections expire before the server's own
            # keep-alive timeout: httpx2's default (5 s) equals uvicorn's, and a request sent
            # as the server closes the connection fails and takes the SDK session down.
            http = httpx2.AsyncClient(
                headers=dict(cfg.headers) or None,
                timeout=httpx2.Timeout(30.0, read=300.0),  # the SDK's, for long-lived streams
                limits=httpx2.Limits(keepalive_expiry=IDLE_EXPIRY))
            lane = HttpLane(_HttpTransport(cfg.url, http, streamable_http_client), cfg.url,
                            cfg.headers, self.name)
        else:
            env = get_default_environment() | {"PYTHONUNBUFFERED": "1"} | dict(cfg.env)
            lane = RawStdio(cfg.command or "", list(cfg.args), env, cfg.cwd or os.getcwd())
        self.lane = lane
        return lane

    def _make_client(self) -> Client:
        # Our lanes are transports by what they do (the SDK's Transport protocol), and the
        # callbacks take the SDK's arguments; the SDK's callback protocols name them.
        return Client(
            cast(Any, self._transport()),
            mode=self.mode,
            cache=None,
            read_timeout_seconds=self.config.request_timeout,
            message_handler=self._on_message,
            elicitation_callback=cast(Any, self._on_elicit),
            sampling_callback=cast(Any, self._on_sample),
            list_roots_callback=cast(Any, self._on_roots),
            logging_callback=self._on_log,
        )

    async def run(self) -> None:
        """Supervise the connection until cancelled (run it in the proxy's task group)."""
        await self._go.wait()
        while not self._stopping:
            try:
                async with self._make_client() as client:
                    self._client = client
                    self.generation += 1
                    self._restart = anyio.Event()
                    self._ready.set()
                    logger.info("upstream %r connected (%s, %s)", self.name,
                                client.protocol_version, self.config.describe())
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._events.connected, self)
                        if self.modern:
                            tg.start_soon(self._listen_loop, client)
                        await self._restart.wait()
                        tg.cancel_scope.cancel()
            except Exception as exc:  # the SDK raises assorted errors for a dead peer
                if self._refused_era(exc):
                    logger.info("upstream %r refused the handshake era (%s); connecting in "
                                "auto mode", self.name, _sole(exc))
                    self.mode, self._fallback = "auto", False
                    continue
                logger.warning("upstream %r failed: %s: %s", self.name, type(exc).__name__, exc)
                if self.generation == 0 and isinstance(exc, OSError):
                    # It never started (no such command...): retrying will not help.
                    self._failure = f"could not be started: {exc}"
                    self._client = None
                    self._ready.set()
                    return
            finally:
                self._client = None
                if self._ready.is_set():
                    self._ready = anyio.Event()
            if self._stopping:
                break
            if self.restarts >= self.config.max_restarts:
                self._failure = (f"is unavailable: it stopped {self.restarts + 1} times "
                                 f"({self.config.describe()})")
                logger.error("upstream %r %s; giving up", self.name, self._failure)
                self._ready.set()
                return
            self.restarts += 1
            delay = min(0.25 * 2 ** (self.restarts - 1), 5.0)
            logger.warning("restarting upstream %r in %.2fs (restart %d of %d)", self.name,
                           delay, self.restarts, self.config.max_restarts)
            await anyio.sleep(delay)

    def _refused_era(self, exc: Exception) -> bool:
        """The first handshake-era connection failed with an answer, not a dead process."""
        if not self._fallback or self.generation:
            return False
        exc = _sole(exc)
        if isinstance(exc, MCPError):
            return exc.error.code != CONNECTION_CLOSED
        return isinstance(exc, RuntimeError | ValueError)  # an unsupported version

    def stop(self) -> None:
        """Leave the supervisor loop."""
        self._stopping = True
        self._restart.set()

    def raise_for(self, answer: UpstreamAnswer | None) -> Result | InputRequired:
        """``answer`` if it is a result (or asks for input); else raise what the SDK route
        raises: for a lost connection (None or :class:`Lost`) restart it and raise
        :class:`UpstreamUnavailable`; for the upstream's JSON-RPC error an ``MCPError`` with
        its code, message and data."""
        if isinstance(answer, Lost) or answer is None:
            self.lost(self.generation)
            raise UpstreamUnavailable(self.name, LOST)
        if isinstance(answer, RpcError):
            error = answer.error
            code = error.get("code")
            raise MCPError(code=code if isinstance(code, int) else INTERNAL_ERROR,
                           message=str(error.get("message", "")), data=error.get("data"))
        return answer

    def lost(self, generation: int) -> None:
        """A request found the connection of ``generation`` dead: restart it."""
        if generation == self.generation and self._client is not None:
            logger.warning("upstream %r closed the connection", self.name)
            # Later requests wait for the restart instead of hitting the dead connection.
            self._client = None
            self._ready = anyio.Event()
            self._restart.set()

    async def _listen_loop(self, client: Client) -> None:
        """Keep a 2026 ``subscriptions/listen`` stream open; events arrive via ``_on_message``."""
        self._no_listen = False
        while True:
            self._listen_changed = anyio.Event()
            try:
                async with client.listen(
                    tools_list_changed=True, prompts_list_changed=True,
                    resources_list_changed=True, resource_subscriptions=sorted(self.subscriptions),
                ) as sub, anyio.create_task_group() as tg:
                    self._listening.set()

                    async def drain() -> None:
                        async for _ in sub:  # events are teed to the message handler
                            pass
                        tg.cancel_scope.cancel()

                    tg.start_soon(drain)
                    await self._listen_changed.wait()
                    tg.cancel_scope.cancel()
                    continue
            except MCPError as exc:
                if exc.error.code == METHOD_NOT_FOUND:
                    logger.info("upstream %r has no subscriptions/listen; no change "
                                "notifications from it", self.name)
                    self._no_listen = True
                    self._listening.set()  # wake a resubscribe() already waiting
                    return
                logger.info("upstream %r listen stream ended: %s", self.name, exc)
            except Exception as exc:
                logger.info("upstream %r listen stream ended: %s", self.name, exc)
            # An ended stream is re-opened after a pause; a dead connection ends this task.
            with anyio.move_on_after(1.0):
                await self._listen_changed.wait()

    # ------------------------------------------------------------------ requests

    async def request(self, fn: Callable[[Client], Awaitable[R]], *,
                      timeout: float = CONNECT_TIMEOUT) -> R:
        """Run ``fn(client)``; translate a dropped connection into a clear error.

        Raises:
            UpstreamUnavailable: the upstream is down, or died during the request.
            MCPError: the upstream's own error, unchanged.
        """
        client = await self.wait_connected(timeout)
        generation = self.generation
        try:
            return await fn(client)
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED and self.config.url is not None:
                from agentguard.proxy.upstream_http import dropped_request

                # Over HTTP the SDK says this of one abandoned request (a response stream
                # that ended early), not of the upstream: nothing to restart.
                raise UpstreamUnavailable(self.name, dropped_request(exc.error.message)) from exc
            if exc.error.code == CONNECTION_CLOSED:
                self.lost(generation)
                raise UpstreamUnavailable(self.name, LOST) from exc
            raise

    # ------------------------------------------------------------------ from the upstream

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            logger.warning("upstream %r transport error: %s", self.name, message)
            return
        await self._events.notification(self, message)

    async def _on_log(self, params: LoggingMessageNotificationParams) -> None:
        await self._events.log(self, params)

    async def _on_elicit(self, ctx: Any, params: Any) -> Any:
        from mcp.types import ElicitRequest

        return await self._events.ask(self, ElicitRequest(params=params))

    async def _on_sample(self, ctx: Any, params: Any) -> Any:
        from mcp.types import CreateMessageRequest

        return await self._events.ask(self, CreateMessageRequest(params=params))

    async def _on_roots(self, ctx: Any) -> Any:
        from mcp.types import ListRootsRequest

        return await self._events.ask(self, ListRootsRequest())


def _sole(exc: Exception) -> Exception:
    """The one error inside the SDK's task-group wrapping of the handshake's error."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _HttpTransport:
    """A Streamable HTTP transport whose httpx2 client closes with it."""

    def __init__(self, url: str, http: Any, factory: Any) -> None:
        self._url = url
        self._http = http
        self._factory = factory
        self._cm: Any = None

    async def __aenter__(self) -> Any:
        await self._http.__aenter__()
        self._cm = self._factory(self._url, http_client=self._http)
        try:
            return await self._cm.__aenter__()
        except BaseException:
            await self._http.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._cm.__aexit__(*exc)
        finally:
            await self._http.__aexit__(None, None, None)
