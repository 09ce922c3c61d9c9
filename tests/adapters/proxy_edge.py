"""The MCP proxy as an edge of the conformance suite (tests/test_conformance_edges.py).

The proxy runs in the test process, built from its own parts and served exactly as
``agentguard.proxy.runner`` serves ``--listen`` (``ProxyCore`` -> ``build_server`` ->
``runner.http_stack`` -> ``runner.listening``: the proxy's own HTTP listener on a loopback
port, the relay before ASGI, the SDK's Streamable HTTP app behind ``HardenedASGI`` for the
rest), with the suite's guard instead of ``build_guard``. The MCP SDK client reaches it over
real TCP. The caller's source address reaches the proxy as it does behind a reverse proxy:
the listener believes ``X-Forwarded-For`` from 127.0.0.1, configured as a trusted proxy
(``trusted_proxies``), and each client sends its run's ``source_ip`` there (a run without
one is seen from the TCP peer, 127.0.0.1, and reduced to that: :func:`expressible`).

Upstream: the suite's tools, served by ``tests/adapters/proxy_edge_upstream.py`` in a child
process the proxy starts over stdio (server name :data:`SERVER`, bare tool names); runs are
counted through a file.

What a caller can tell the proxy is less than what the other edges take per call: the
principal and its claims are the proxy's configuration (one proxy per distinct principal,
started when first needed, all sharing the suite's one guard), the source address is the
one in ``X-Forwarded-For`` (from a trusted local proxy), and the session is whatever the
transport has. ``acting_for`` and free-form ``extra`` facts have no way in.
:func:`expressible` says exactly what is kept; the edge refuses to be handed anything else,
so a test cannot silently compare different calls.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agentguard import Guard
from agentguard.adapters._common import RunContext, principal_from
from agentguard.proxy.config import PrincipalConfig, ProxyConfig, UpstreamConfig
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.handlers import build_server
from agentguard.proxy.runner import http_stack, listening

__all__ = ["SERVER", "ProxyFleet", "expressible", "tools_spec"]

ROOT = Path(__file__).resolve().parents[2]
SERVER = "conformance"
"""The upstream's name in the proxy config. Not ``local``, the server name of every other
edge's calls: the policy trusts a server called ``local`` (meant for in-process tools), and
on a trusted server MCP annotations, which a tool cannot leave unsaid, set the class of a tool
no rule covers. Untrusted, they can only add to it, and the neutral hint the upstream declares
adds nothing. The suite's policy has no server conditions; its comparison maps the name."""
HOST = "127.0.0.1"
CALL_TIMEOUT = 30.0


def expressible(run: RunContext) -> RunContext:
    """The part of a caller the proxy can be told.

    Kept: the principal and its claims (the proxy's ``principal`` config) and the source
    address (``X-Forwarded-For``, believed from the trusted loopback peer; a run without
    one comes from that peer, 127.0.0.1: over TCP there is always a peer). Dropped:
    ``acting_for`` and ``extra`` (nothing in MCP or the proxy config carries them) and
    ``session_id`` (the proxy takes the transport's session, which the caller does not
    choose: none on a 2026-07-28 connection).
    """
    return RunContext(principal=run.principal, claims=run.claims,
                      source_ip=run.source_ip or HOST)


def tools_spec(make_tools: Callable[..., Any]) -> str:
    """``module:qualname`` of the suite's ``make_tools``, for the upstream child to import."""
    spec = f"{make_tools.__module__}:{make_tools.__qualname__}"
    if "<" in spec or make_tools.__module__ == "__main__":
        raise ValueError(f"make_tools must be importable by name, not {spec!r}")
    return spec


class ProxyFleet:
    """In-process proxies sharing one guard, one per caller principal, and their clients.

    Args:
        guard: The suite's guard (policy, store, audit, channels, re-authenticators).
        make_tools: The suite's tool factory (imported by name in the upstream child).
        server: The upstream's server name in the proxy config.
    """

    def __init__(self, guard: Guard, make_tools: Callable[..., Any], *,
                 server: str = SERVER) -> None:
        self.guard = guard
        self.server = server
        self.spec = tools_spec(make_tools)
        self.dir = Path(tempfile.mkdtemp(prefix="agentguard-proxy-edge-"))
        self.ran_file = self.dir / "ran.txt"
        self.ran_file.touch()
        self.stack = AsyncExitStack()
        self._urls: dict[tuple[str, str, tuple[tuple[str, Any], ...]], str] = {}
        self._clients: dict[tuple[Any, str | None], Client] = {}

    async def open(self) -> None:
        """Open the shared guard (each proxy would open it; once is enough)."""
        await self.stack.enter_async_context(self.guard)

    async def close(self) -> None:
        """Disconnect the clients, stop the proxies and their upstreams, remove the files."""
        try:
            await self.stack.aclose()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def runs(self) -> list[str]:
        """Tools the upstream children ran so far, in order."""
        return self.ran_file.read_text(encoding="utf-8").split()

    async def call(self, tool: str, args: dict[str, Any], run: RunContext) -> tuple[bool, str]:
        """One ``tools/call`` through the proxy that serves ``run``'s principal."""
        if run != expressible(run):
            raise ValueError(f"the proxy cannot be told {run!r}; pass expressible(run)")
        client = await self._client(run)
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool(tool, args)
        (content,) = result.content
        return not result.is_error, content.text  # type: ignore[union-attr]

    async def _client(self, run: RunContext) -> Client:
        url = await self._url(run)
        key = (url, run.source_ip)
        if key not in self._clients:
            http = await self.stack.enter_async_context(httpx2.AsyncClient(
                headers={"x-forwarded-for": run.source_ip or HOST}, timeout=CALL_TIMEOUT))
            self._clients[key] = await self.stack.enter_async_context(Client(
                streamable_http_client(url, http_client=http), cache=None))
        return self._clients[key]

    async def _url(self, run: RunContext) -> str:
        principal = principal_from(run.principal, run.claims)
        key = (principal.id, principal.kind, tuple(sorted(principal.claims.items())))
        if key not in self._urls:
            self._urls[key] = await self._start(PrincipalConfig(
                id=principal.id, kind=principal.kind, claims=dict(principal.claims)))
        return self._urls[key]

    async def _start(self, principal: PrincipalConfig) -> str:
        """What ``runner._serve`` and ``runner._serve_http`` do, on a free loopback port."""
        upstream = UpstreamConfig(
            name=self.server, command=sys.executable, cwd=str(ROOT),
            args=["-m", "tests.adapters.proxy_edge_upstream", self.spec, str(self.ran_file)])
        # `listen` enables the HTTP options; the port bound is any free one (0, below).
        config = ProxyConfig(principal=principal, servers=[upstream], listen=f"{HOST}:8787",
                             trusted_proxies=[HOST])
        core = await self.stack.enter_async_context(ProxyCore(config, self.guard))
        await core.started()
        server = build_server(core)
        stack = http_stack(server, core, config, HOST)  # the relay included
        bound = await self.stack.enter_async_context(
            listening(server, stack, config, HOST, 0))
        port = bound.sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}/mcp"
