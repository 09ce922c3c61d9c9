"""OAuth on the HTTP proxy: bearer tokens required, RFC 9470 step-up for rules that ask for a
stronger or fresher login, tokens never passed upstream. Real parts: the proxy process, a JWKS
served over HTTP, tokens signed with a local key, the real `mcp` client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.oauth.conftest import AUDIENCE, ISSUER, SILVER, JwksServer, Key, claims, rsa_key
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

GOLD = "urn:mace:incommon:iap:gold"


@pytest.fixture(scope="module")
def key() -> Key:
    return rsa_key("proxy-test")


@pytest.fixture
def jwks(key: Key) -> Iterator[JwksServer]:
    server = JwksServer([key])
    yield server
    server.stop()


def write_config(proxy: ProxyUnderTest, jwks: JwksServer, port: int) -> Path:
    # First in the rule list, so it decides before the test policy's own deploy rules.
    rule = f"""rules:
  - id: deploy-needs-gold
    match: {{server: ops, tool: deploy}}
    class: write
    require: reauth
    reauth: {{method: oauth, acr_values: ["{GOLD}"], max_age: 5m}}
"""
    policy_path = proxy.home / "oauth-policy.yaml"
    policy_path.write_text(proxy.policy.read_text().replace("rules:\n", rule, 1))
    config = proxy.home / "proxy.yaml"
    config.write_text(f"""
policy: {policy_path}
store: {proxy.store_url}
audit: {proxy.audit}
listen: 127.0.0.1:{port}
servers:
  ops:
    command: {PYTHON}
    args: [{OPS_SERVER}, --root, {proxy.sandbox}]
oauth:
  issuer: {ISSUER}
  jwks_uri: {jwks.url}
  resource: {AUDIENCE}
""")
    return config


async def test_tokens_are_required_and_step_up_is_enforced(
        proxy: ProxyUnderTest, jwks: JwksServer, key: Key) -> None:
    port = free_port()
    config = write_config(proxy, jwks, port)
    url = f"http://127.0.0.1:{port}/mcp"
    argv = [PYTHON, "-m", "agentguard.proxy", "--config", str(config), "--log-level", "WARNING"]
    async with running(argv, proxy.env(), port):
        async with httpx2.AsyncClient() as raw:
            missing = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            forged = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                    headers={"authorization": "Bearer not-a-token"})
            assert forged.status_code == 401

        token = key.sign(claims(acr=SILVER, auth_time=int(time.time()) - 30))
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
        async with http, Client(streamable_http_client(url, http_client=http),
                                mode="legacy", cache=None) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "get_status" in tools
            ok = await client.call_tool("get_status", {"service": "api"})
            assert not ok.is_error
            refused = None
            with anyio.fail_after(60):
                try:
                    refused = await client.call_tool(
                        "deploy", {"env": "staging", "service": "api", "version": "1"})
                except Exception as exc:  # a 2026-era client may surface the 401 as an error
                    refused = exc
            if not isinstance(refused, Exception):
                assert refused.is_error
                assert "re-authentication" in refused.content[0].text
    failed = proxy.audit_events("reauth.failed")
    assert failed and "acr" in failed[0]["detail"]
    assert failed[0]["rule_id"] == "deploy-needs-gold"
