"""The seam the proxy uses: BearerAuth around the MCP SDK's Streamable HTTP app, a tool
handler reading the verified token from ``ctx.request`` and asking for a step-up."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.types import CallToolResult, ListToolsResult, TextContent, Tool

from agentguard.oauth import (
    BearerAuth,
    StepUpChallenge,
    TokenValidator,
    request_step_up,
    token_from_scope,
    url_elicitation,
)
from tests.oauth.conftest import AUDIENCE, ISSUER, SILVER, Key, claims, serving

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CHALLENGE = StepUpChallenge(acr_values=(SILVER,), max_age=300)


async def on_list_tools(ctx: Any, params: Any) -> ListToolsResult:
    return ListToolsResult(tools=[Tool(name=n, input_schema={"type": "object"})
                                  for n in ("whoami", "payroll", "payroll_url")])


async def on_call_tool(ctx: Any, params: Any) -> CallToolResult:
    token = token_from_scope(ctx.request)
    if params.name == "whoami":
        seen = ctx.request.headers.get("authorization")
        text = f"{token.subject} {token.acr} authorization={seen}"
        return CallToolResult(content=[TextContent(type="text", text=text)])
    if params.name == "payroll_url":  # for clients that support URL elicitation
        raise url_elicitation(CHALLENGE, "https://issuer.test/authorize?prompt=login",
                              elicitation_id="stepup-1")
    flagged = request_step_up(ctx.request, CHALLENGE)
    return CallToolResult(is_error=True, content=[TextContent(
        type="text", text=f"step-up required (flagged={flagged})")])


@pytest.mark.parametrize(("mode", "json_response", "http_answer"), [
    ("legacy", True, True),   # JSON responses: the status is still ours to choose
    ("auto", False, True),    # the 2026 era answers each request once it is done
    ("legacy", False, False),  # legacy SSE: 200 went out first; the refusal stays in-band
])
async def test_tool_handlers_see_claims_not_tokens_and_can_demand_step_up(
        validator: TokenValidator, rsa_a: Key, mode: str, json_response: bool,
        http_answer: bool) -> None:
    server = Server("payroll", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    app = BearerAuth(server.streamable_http_app(json_response=json_response,
                                                host="127.0.0.1"), validator)
    challenges: list[tuple[int, str | None]] = []

    async def record(response: httpx2.Response) -> None:
        if response.status_code == 401:
            challenges.append((401, response.headers.get("www-authenticate")))

    headers = {"authorization": f"Bearer {rsa_a.sign(claims())}"}
    async with serving(app, lifespan="on") as url, \
            httpx2.AsyncClient(headers=headers, timeout=20,
                               event_hooks={"response": [record]}) as http, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client:
        whoami = await client.call_tool("whoami", {})
        assert whoami.content[0].text == f"alice {SILVER} authorization=None"
        if http_answer:
            with pytest.raises(MCPError):
                await client.call_tool("payroll", {})
        else:
            result = await client.call_tool("payroll", {})
            assert result.is_error and "flagged=True" in result.content[0].text
    if http_answer:
        assert challenges == [(401, 'Bearer realm="agentguard", error="insufficient_user_'
                                    'authentication", error_description="a stronger or more '
                                    f'recent authentication is required", acr_values="{SILVER}", '
                                    'max_age="300"')]
    else:
        assert challenges == []


async def test_an_mcp_request_without_a_token_never_reaches_the_server(
        validator: TokenValidator) -> None:
    server = Server("payroll", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    app = BearerAuth(server.streamable_http_app(host="127.0.0.1"), validator)
    async with serving(app, lifespan="on") as url, httpx2.AsyncClient(timeout=20) as http:
        response = await http.post(f"{url}/mcp", json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}}},
            headers={"accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agentguard"'


async def test_url_elicitation_and_resource_metadata_through_the_sdk(
        validator: TokenValidator, rsa_a: Key) -> None:
    """The SDK serves RFC 9728 metadata (exempt from the token) and relays a step-up raised
    as a URL elicitation as JSON-RPC error -32042."""
    from mcp.server.auth.settings import AuthSettings

    server = Server("payroll", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    app = BearerAuth(server.streamable_http_app(
        host="127.0.0.1", auth=AuthSettings(issuer_url=ISSUER, resource_server_url=AUDIENCE,
                                             validate_token_resource=False)),
        validator)
    headers = {"authorization": f"Bearer {rsa_a.sign(claims())}"}
    async with serving(app, lifespan="on") as url, \
            httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with httpx2.AsyncClient(timeout=20) as anonymous:
            metadata = await anonymous.get(f"{url}/.well-known/oauth-protected-resource/mcp")
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http),
                          mode="legacy") as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("payroll_url", {})
    assert metadata.status_code == 200
    assert metadata.json()["authorization_servers"] == [ISSUER]
    assert caught.value.error.code == -32042
    (asked,) = caught.value.error.data["elicitations"]
    assert asked["url"] == ("https://issuer.test/authorize?prompt=login&acr_values="
                            "urn%3Amace%3Aincommon%3Aiap%3Asilver&max_age=300")
