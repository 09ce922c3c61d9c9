"""Run the proxy: build the guard, connect the upstreams, serve stdio or Streamable HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import NotificationParams

from agentguard import settings
from agentguard.channels.terminal import TerminalChannel
from agentguard.errors import AgentGuardError, ConfigError
from agentguard.guard import Guard
from agentguard.proxy import early_spawn
from agentguard.proxy.asgi import HardenedASGI
from agentguard.proxy.config import ProxyConfig, parse_listen
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.handlers import build_server
from agentguard.proxy.http_listener import DirectRelay, Limits, Listener
from agentguard.proxy.http_relay import PING_INTERVAL, HttpRelay
from agentguard.proxy.reauth_url import ReauthLinks
from agentguard.proxy.stdio import stdio_transport
from agentguard.proxy.stdio_relay import StdioRelay

__all__ = [
    "HttpStack",
    "build_guard",
    "default_audit_path",
    "default_store_url",
    "http_app",
    "http_stack",
    "listening",
    "run_proxy",
    "transport_security",
]

logger = logging.getLogger(__name__)


def default_store_url() -> str:
    """``$AGENTGUARD_STORE`` or the SQLite file under ``~/.agentguard`` (shared with the CLI)."""
    return settings.store_url()


def default_audit_path() -> Path | str:
    """``$AGENTGUARD_AUDIT`` or ``~/.agentguard/audit.jsonl`` (shared with the CLI)."""
    return settings.audit_path()


def build_guard(config: ProxyConfig) -> Guard:
    """The guard described by a proxy config: policy, shared store, JSONL audit, channels.

    Held calls wait for the approver terminal (``agentguard approvals approve``, voting into
    the shared store) and, where a rule opts in, for MCP elicitation to the client's user.

    Raises:
        ConfigError: no policy was given, or it does not load.
    """
    return _build_guard(config)[0]


def _build_guard(config: ProxyConfig) -> tuple[Guard, ReauthLinks | None]:
    from agentguard.channels.console import ConsoleChannel
    from agentguard.policy import load_policy
    from agentguard.proxy.config import cleartext_url
    from agentguard.reauth import TotpReauthenticator, TotpVerifier
    from agentguard.store import open_store

    policy_path = settings.policy_path(config.policy)
    if not policy_path:
        raise ConfigError("the proxy needs a policy: pass --policy P.yaml (or set "
                          "AGENTGUARD_POLICY, or `policy:` in the proxy config)")
    policy = load_policy(policy_path)
    # One resolver for the proxy and the CLI: a held call is found by `agentguard approvals`
    # run with the same environment.
    store_url = settings.store_url(config.store)
    audit_file = settings.audit_path(config.audit)
    store = open_store(store_url)
    audit = settings.open_audit_log(audit_file)
    # TOTP codes are typed on the controlling terminal, never through the MCP client; a proxy
    # started without one (e.g. by a desktop app) refuses re-authentication as unreachable.
    # Over HTTP, a rule naming mcp-elicitation may instead send the client a link to a page
    # of the proxy where the code is typed: the client sees the link, never the code.
    ask_code = ConsoleChannel().ask_code
    links = None
    if config.listen:
        base = _public_base(config)
        if cleartext_url(base):
            logger.warning("re-authentication links point at %s: TOTP codes typed there "
                           "travel in clear; serve the proxy behind https and pass "
                           "--public-url https://...", base)
        links = ReauthLinks(base, ask_code, policy=policy)
    from agentguard.reauth.seal import SeedSeal

    totp = TotpReauthenticator(TotpVerifier(store, seal=SeedSeal.default()),
                               links.ask_code if links else ask_code)
    reauthenticators: dict[str, Any] = {"totp": totp}
    if config.oauth is not None:
        from agentguard.oauth.stepup import OAuthReauthenticator

        reauthenticators["oauth"] = OAuthReauthenticator()
    if config.passkey_page:
        reauthenticators["passkey"] = _passkey(policy, store, config.passkey_page, links)
    terminal = TerminalChannel(store_url, audit_hint=str(audit_file))
    return Guard(policy, store=store, audit=audit, channels=[terminal],
                 reauthenticators=reauthenticators), links


def _passkey(policy: Any, store: Any, page: str, links: ReauthLinks | None) -> Any:
    """Passkey step-up through ``serve --web``'s page and the store: the link goes to the
    client as a URL-mode elicitation (HTTP only), and the guard verifies the proof the page
    leaves against the policy's trust file."""
    from agentguard.reauth.passkey import PasskeyReauthenticator
    from agentguard.reauth.passkey_mailbox import MailboxStepUp

    if policy.trust is None:
        raise ConfigError("--passkey-page needs `trust:` in the policy (the passkeys)")
    return PasskeyReauthenticator(policy.trust, MailboxStepUp(
        store, page, announce=links.offer_passkey if links else None))


def _public_base(config: ProxyConfig) -> str:
    """Where browsers reach the re-authentication pages: ``public_url``, else ``listen``."""
    if config.public_url:
        return config.public_url
    assert config.listen is not None
    host, port = parse_listen(config.listen)
    if host in ("0.0.0.0", "::"):
        logger.info("re-authentication links point at this machine's loopback (listening on "
                    "%s); pass --public-url when users reach the proxy elsewhere", host)
        host = "127.0.0.1"  # a wildcard bind is reachable on loopback at least
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def run_proxy(config: ProxyConfig, *, guard: Guard | None = None,
                    relay: bool = True) -> None:
    """Serve until the client disconnects (stdio) or the process is stopped (HTTP).

    Args:
        config: What to front and how to serve.
        guard: A ready guard (default: :func:`build_guard` from the config).
        relay: Relay calls that may skip the guard without the SDK stacks (see
            :mod:`agentguard.proxy.relay`); off only to measure the difference.

    Raises:
        ConfigError: bad configuration, no upstream could start, or a name collision at
            start-up.
    """
    links: ReauthLinks | None = None
    if guard is None:
        guard, links = _build_guard(config)
    try:
        await _serve(config, guard, relay, links)
    except BaseExceptionGroup as group:
        # Task groups wrap a start-up failure; show the error, not the wrapping.
        mine = group.subgroup(AgentGuardError)
        if mine is not None:
            raise _first(mine) from None
        raise


def _first(group: BaseExceptionGroup) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _serve(config: ProxyConfig, guard: Guard, relay: bool,
                 links: ReauthLinks | None = None) -> None:
    # stdio has one client: its upstreams connect in that client's era (see _serve_stdio).
    async with guard, ProxyCore(config, guard, relay=relay,
                                client_era=not config.listen) as core:
        if not config.listen:
            await _serve_stdio(core, config, relay)
            return
        server = await _started(core)
        host, port = parse_listen(config.listen)
        logger.info("agentguard proxy for %s on http://%s:%d/mcp", _names(core), host, port)
        await _serve_http(server, core, host, port, config, links)


async def _started(core: ProxyCore, *, client_legacy: bool = False) -> Any:
    """Connect the upstreams, list them, and build the proxy's MCP server."""
    await core.started(client_legacy=client_legacy)
    # Every upstream has taken its early-started process by now, if it had one.
    early_spawn.discard()
    server = build_server(core)
    server.add_notification_handler("notifications/initialized", NotificationParams,
                                    core.notifier.initialized)
    return server


def _names(core: ProxyCore) -> str:
    return ", ".join(f"{u.name} ({u.config.describe()})" for u in core.upstreams.values())


async def _serve_stdio(core: ProxyCore, config: ProxyConfig, relay: bool) -> None:
    """Serve the one stdio client, connecting the upstreams once its first message says its
    era: a handshake-era client (``initialize``) gets ``auto`` upstreams connected in the
    handshake era, which costs the upstream's SDK less per call and lets the relay carry the
    calls on the wire. The upstream processes start early all the same."""
    ready = anyio.Event()
    started: list[tuple[Any, Any]] = []
    stamp: list[Any] = [None]

    async def first(value: dict[str, Any] | None) -> None:
        legacy = value is not None and value.get("method") == "initialize" and "id" in value
        server = await _started(core, client_legacy=legacy)
        stamp[0] = server.server_info_stamp  # serialized, never mutated: one copy will do
        started.append((server, server.create_initialization_options()))
        logger.info("agentguard proxy for %s on stdio", _names(core))
        ready.set()

    fast = StdioRelay(core, lambda: stamp[0]) if relay else None
    async with stdio_transport(max_message_bytes=config.max_message_bytes,
                               max_depth=config.max_depth, interceptor=fast,
                               first=first) as (read, write):
        await ready.wait()
        server, options = started[0]  # options as the upstreams declare
        await server.run(read, write, options)


def transport_security(host: str, public_url: str | None = None
                       ) -> TransportSecuritySettings | None:
    """DNS-rebinding protection for a loopback bind, as the SDK sets it up by default, plus
    the host and origin of ``public_url`` (a reverse proxy passing its ``Host`` through).

    Made explicit so the HTTP relay checks requests with the very settings the SDK app
    uses. Other binds get no Host/Origin check (the SDK's default too).
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if public_url:
        parts = urlsplit(public_url)
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=hosts, allowed_origins=origins)


def http_app(server: Any, core: ProxyCore, config: ProxyConfig, host: str,
             links: ReauthLinks | None = None, *, ping_interval: float = PING_INTERVAL) -> Any:
    """The proxy's ASGI app for ``--listen``: the SDK's Streamable HTTP app behind the
    body checks and the relay of allowed calls, bearer authentication when configured, and
    the re-authentication pages.

    The caller runs it (uvicorn with ``lifespan="on"``, or enters
    ``server.session_manager.run()`` itself); ``--listen`` serves it with
    :func:`listening`.
    """
    return http_stack(server, core, config, host, links, ping_interval=ping_interval).app


@dataclass(frozen=True)
class HttpStack:
    """The ``--listen`` app, and how the listener serves it.

    Attributes:
        app: The full ASGI app (the relay inside it), as :func:`http_app` returns it.
        protocol: The uvicorn protocol for embedders serving ``app`` with uvicorn.
        relay: The listener's relay entry before ASGI (None with OAuth or without the relay:
            then ``app`` relays after bearer authentication).
        declined: What the listener serves when ``relay`` is set: ``app`` without the relay,
            so a request the relay declined is not offered to it twice.
    """

    app: Any
    protocol: str = "httptools"
    relay: DirectRelay | None = None
    declined: Any = None


def http_stack(server: Any, core: ProxyCore, config: ProxyConfig, host: str,
               links: ReauthLinks | None = None, *, ping_interval: float = PING_INTERVAL
               ) -> HttpStack:
    """:func:`http_app`, with what the ``--listen`` listener needs to serve it.

    Without OAuth, the listener offers a complete ``POST /mcp`` to the relay before any ASGI
    app runs; with OAuth, the relay answers inside the ASGI stack, after bearer
    authentication. Public interfaces only (of uvicorn too, for embedders).
    """
    security = transport_security(host, config.public_url)
    app = server.streamable_http_app(
        streamable_http_path="/mcp", host=host, transport_security=security,
        max_request_body_size=config.max_message_bytes,
    )
    app = core.notifier.watch_sessions(app)  # a deleted session's subscriptions go with it
    stamp = server.server_info_stamp  # serialized, never mutated: one copy will do
    fast = HttpRelay(core, lambda: stamp, security, ping_interval=ping_interval) \
        if core.relay_enabled else None

    def hardened(relay: HttpRelay | None) -> Any:
        wrapped = HardenedASGI(app, max_message_bytes=config.max_message_bytes,
                               max_depth=config.max_depth, relay=relay)
        return links.wrap(wrapped) if links is not None else wrapped

    if config.oauth is None:
        if fast is None:
            return HttpStack(hardened(None))
        # Requests the direct route declines still meet the relay in ASGI: it learns the
        # sessions the SDK app opens from their answers (the book both routes consult).
        return HttpStack(hardened(fast), relay=DirectRelay(fast, app, max_depth=config.max_depth),
                         declined=hardened(fast))
    from agentguard.oauth.asgi import BearerAuth
    from agentguard.oauth.jwks import JwksClient
    from agentguard.oauth.tokens import TokenValidator

    oauth = config.oauth
    validator = TokenValidator(issuer=oauth.issuer, audience=oauth.audience or [oauth.resource],
                               jwks=JwksClient(oauth.jwks_uri), algorithms=oauth.algorithms)
    # Outside the relay: a request without a valid token never reaches the MCP layer, and
    # the Authorization header is stripped before it (no token passthrough to upstreams).
    guarded: Any = BearerAuth(HardenedASGI(app, max_message_bytes=config.max_message_bytes,
                                           max_depth=config.max_depth, relay=fast),
                              validator, required_scopes=oauth.required_scopes,
                              forward_token=oauth.forward_token)
    return HttpStack(links.wrap(guarded) if links is not None else guarded)


KEEP_ALIVE_SECONDS = 75
"""How long ``--listen`` keeps an idle client connection open (nginx's default)."""


@asynccontextmanager
async def listening(server: Any, stack: HttpStack, config: ProxyConfig, host: str, port: int,
                    *, limits: Limits | None = None) -> AsyncIterator[asyncio.Server]:
    """Serve ``stack`` on ``host:port`` (0: any free port) with the proxy's own listener,
    the SDK's session manager running, until the block ends.

    Yields:
        The asyncio server (``sockets[0].getsockname()`` gives the port).
    """
    # X-Forwarded-For is believed only from configured reverse proxies. Idle keep-alive
    # connections outlive the clients' own idle expiry (httpx 5 s, Node 4 s): with equal
    # timeouts a client's request can cross the server's close and be lost.
    listener = Listener(stack.declined if stack.relay is not None else stack.app,
                        relay=stack.relay, trusted_proxies=config.trusted_proxies,
                        limits=limits or Limits(max_body_bytes=config.max_message_bytes,
                                                keep_alive=KEEP_ALIVE_SECONDS,
                                                max_connections=config.max_connections))
    async with server.session_manager.run():
        bound = await listener.start(host, port)
        try:
            yield bound
        finally:
            await listener.close()


async def _serve_http(server: Any, core: ProxyCore, host: str, port: int, config: ProxyConfig,
                      links: ReauthLinks | None = None) -> None:
    stack = http_stack(server, core, config, host, links)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop gracefully: upstreams are shut down
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or not supported here: default handling
    try:
        async with listening(server, stack, config, host, port):
            await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
