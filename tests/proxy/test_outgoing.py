"""What a relayed ``tools/call`` carries upstream: :func:`agentguard.proxy.relay.outgoing_call`.

The params are the same on every lane; the SDK's per-request HTTP headers are built only for
a lane that sends them (the stdio lane sends none, so none are built for it).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER
from mcp.types import LOG_LEVEL_META_KEY, PROTOCOL_VERSION_META_KEY, Tool

from agentguard.proxy.catalog import Entry, hints_for
from agentguard.proxy.pins import PinStatus
from agentguard.proxy.relay import RelayRoute, Skip, outgoing_call
from agentguard.proxy.upstream_http import HttpLane
from agentguard.proxy.upstream_io import RawStdio

_ENVELOPE = {PROTOCOL_VERSION_META_KEY: "2026-07-28", "io.modelcontextprotocol/clientInfo": {
    "name": "agentguard", "version": "1"}}
_SCHEMA = {"type": "object", "properties": {
    "region": {"type": "string", "x-mcp-header": "Region"}}}


def _route(*, carries_headers: bool, modern: bool, log_level: str | None = None) -> RelayRoute:
    tool = Tool(name="deploy", input_schema=_SCHEMA)
    entry = Entry("ops", "deploy", "ops_deploy", tool, hints_for(tool),
                  PinStatus("pinned", "a" * 64, "b" * 64))
    lane = SimpleNamespace(carries_headers=carries_headers, envelope=dict(_ENVELOPE),
                           closed=False)
    upstream: Any = SimpleNamespace(modern=modern, lane=lane,
                                    client=SimpleNamespace(protocol_version="2025-11-25"))
    return RelayRoute(entry, upstream, Skip("test"), log_level)


_PARAMS = {"name": "ops_deploy", "arguments": {"region": "eu"},
           "_meta": {"trace": "t1", PROTOCOL_VERSION_META_KEY: "forged"}}


def test_the_real_lanes_say_whether_they_carry_headers() -> None:
    assert RawStdio.carries_headers is False
    assert HttpLane.carries_headers is True


@pytest.mark.parametrize("modern", [True, False])
def test_the_params_are_the_same_on_every_lane_and_only_http_gets_headers(modern: bool) -> None:
    on_stdio = outgoing_call(_route(carries_headers=False, modern=modern, log_level="debug"),
                             _PARAMS)
    on_http = outgoing_call(_route(carries_headers=True, modern=modern, log_level="debug"),
                            _PARAMS)
    assert on_stdio[1] is None
    assert on_stdio[0] == on_http[0]
    out = on_http[0]
    assert out["name"] == "deploy"
    assert out["arguments"] == {"region": "eu"}
    if modern:
        assert out["_meta"] == {"trace": "t1", **_ENVELOPE, LOG_LEVEL_META_KEY: "debug"}
        assert on_http[1] == {MCP_PROTOCOL_VERSION_HEADER: "2026-07-28",
                              MCP_METHOD_HEADER: "tools/call", MCP_NAME_HEADER: "deploy",
                              "Mcp-Param-Region": "eu"}
    else:
        assert out["_meta"] == {"trace": "t1"}  # reserved keys dropped, no envelope
        assert on_http[1] == {MCP_PROTOCOL_VERSION_HEADER: "2025-11-25"}
    assert _PARAMS["_meta"] == {"trace": "t1", PROTOCOL_VERSION_META_KEY: "forged"}


def test_a_call_with_only_reserved_meta_sends_none() -> None:
    params = {"name": "ops_deploy", "_meta": {PROTOCOL_VERSION_META_KEY: "forged"}}
    out, headers = outgoing_call(_route(carries_headers=False, modern=False), params)
    assert out == {"name": "deploy"} and headers is None
