"""Subscriptions are bound to the downstream session that made them.

A handshake-era Streamable HTTP client subscribes to a resource on its session; when the
session is deleted, nothing of it may stay in the proxy: no session to push to, no
subscription holding the upstream subscribed. Observed through the notifier's public counts
and the upstream's subscriptions, on a real proxy (uvicorn, the SDK app, the ops server).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from agentguard.proxy.config import ProxyConfig, UpstreamConfig
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.handlers import build_server
from agentguard.proxy.runner import build_guard, http_stack
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, wait_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

URI = "ops://services/search/status"


@asynccontextmanager
async def _proxy(proxy: ProxyUnderTest) -> AsyncIterator[tuple[str, ProxyCore]]:
    """The ``--listen`` proxy in this process, so its notifier can be counted."""
    import uvicorn

    config = ProxyConfig(policy=str(proxy.policy), store=proxy.store_url,
                         audit=str(proxy.audit), servers=[UpstreamConfig(
                             name="ops", command=PYTHON,
                             args=[OPS_SERVER, "--root", str(proxy.sandbox)])])
    port = free_port()
    async with build_guard(config) as guard, ProxyCore(config, guard) as core:
        await core.started()
        server = build_server(core)
        stack = http_stack(server, core, config, "127.0.0.1")
        uv = uvicorn.Server(uvicorn.Config(stack.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           http=stack.protocol))
        async with anyio.create_task_group() as tg:
            tg.start_soon(uv.serve)
            await wait_port(port)
            try:
                yield f"http://127.0.0.1:{port}/mcp", core
            finally:
                uv.should_exit = True


def _updates(seen: list[str]) -> Callable[[Any], Any]:
    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if type(root).__name__ == "ResourceUpdatedNotification":
            seen.append(str(root.params.uri))
    return on_message


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not condition():
            await anyio.sleep(0.05)


async def _subscribe(client: Client) -> None:
    with pytest.warns(MCPDeprecationWarning):  # old era only; it is what we test
        await client.session.subscribe_resource(URI)


async def test_a_deleted_session_keeps_no_subscription_and_hears_nothing(
        proxy: ProxyUnderTest) -> None:
    async with _proxy(proxy) as (url, core):
        notifier, upstream = core.notifier, core.upstreams["ops"]
        kept: list[str] = []
        async with Client(url, mode="legacy", cache=None, message_handler=_updates(kept)) as a:
            await _subscribe(a)
            # Sessions come and go (each deleted by its client on close): none stays behind.
            for _ in range(3):
                gone: list[str] = []
                async with Client(url, mode="legacy", cache=None,
                                  message_handler=_updates(gone)) as b:
                    await _subscribe(b)
                    assert notifier.subscriber_count(URI) == 2
                    assert notifier.session_count() == 2
                await _until(lambda: notifier.subscriber_count() == 1)
                assert notifier.session_count() == 1
                assert URI in upstream.subscriptions  # the other session still wants it
            async with anyio.create_task_group() as tg:
                tg.start_soon(proxy.decide, True)  # the policy holds a restart
                await a.call_tool("restart_service", {"service": "search"})
            await _until(lambda: URI in kept)
            assert gone == []  # the deleted session heard nothing
        await _until(lambda: notifier.subscriber_count() == 0)
        assert notifier.session_count() == 0
        assert URI not in upstream.subscriptions  # nobody wants it: unsubscribed upstream


async def test_a_refused_delete_ends_no_session(proxy: ProxyUnderTest) -> None:
    """A DELETE the SDK app refuses (an unknown session: also what another credential's
    request for a live session gets) drops nobody's subscriptions."""
    async with _proxy(proxy) as (url, core), \
            Client(url, mode="legacy", cache=None) as client, \
            httpx2.AsyncClient(timeout=30) as http:
        await _subscribe(client)
        refused = await http.delete(url, headers={"mcp-session-id": uuid.uuid4().hex,
                                                  "mcp-protocol-version": "2025-11-25"})
        assert refused.status_code >= 400
        assert core.notifier.subscriber_count(URI) == 1
        assert core.notifier.session_count() == 1
