"""The proxy over stdio, driven by the real MCP client in both protocol eras."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from tests.proxy.conftest import MODES, ProxyUnderTest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.mark.parametrize("mode", MODES)
async def test_allowed_calls_pass_and_everything_is_listed(proxy: ProxyUnderTest,
                                                           mode: str) -> None:
    async with proxy.client(proxy.ops(), mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_services", "get_status", "delete_file", "read_secret", "deploy"} <= names
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["get_status"].annotations.read_only_hint is True
        result = await client.call_tool("get_status", {"service": "api"})
        assert not result.is_error
        assert result.content[0].text.startswith("api: running")
        result = await client.call_tool("deploy", {"env": "staging", "service": "api",
                                                   "version": "9"})
        assert result.content[0].text == "deployed api 9 to staging"
    assert proxy.audit_events("call.denied") == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["fast", "full"])
async def test_upstream_errors_pass_through_unchanged(proxy: ProxyUnderTest, mode: str,
                                                     path: str) -> None:
    extra = () if path == "fast" else ("--no-relay",)
    async with proxy.client(proxy.ops(extra), mode) as client:
        assert (await client.call_tool("get_status", {"service": "api"})).content[0].text \
            .startswith("api: running")
        with pytest.raises(MCPError) as err:
            await client.call_tool("get_status", {"service": "nope"})
        assert err.value.error.code == INVALID_PARAMS
        assert err.value.error.message == "unknown service 'nope'"
        with pytest.raises(MCPError) as err:
            await client.call_tool("no_such_tool", {})
        assert err.value.error.code == INVALID_PARAMS
        assert "Unknown tool: no_such_tool" in err.value.error.message
        # A tool error (not a protocol error) stays a tool error.
        result = await client.call_tool("read_secret", {"path": "staging/missing"})
        assert result.is_error and "no secret" in result.content[0].text
    async with proxy.client(proxy.weather(extra), mode) as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("strict_error", {})
        assert (err.value.error.code, err.value.error.message) == (-32099, "quota exceeded")
        assert err.value.error.data == {"retry_after": 42}


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_call_leaves_the_session_usable(
        proxy: ProxyUnderTest, mode: str) -> None:
    seen: list[float] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append(p)

    async with proxy.client(proxy.ops(), mode) as client:
        with anyio.move_on_after(0.4) as scope:
            await client.call_tool("count_to", {"n": 200}, progress_callback=progress)
        assert scope.cancelled_caught
        result = await client.call_tool("get_status", {"service": "api"})
        assert result.content[0].text.startswith("api: running")
    assert 0 < len(seen) < 200
