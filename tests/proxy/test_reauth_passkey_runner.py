"""Passkey step-up through a real ``agentguard proxy`` process and the real MCP SDK client.

``--passkey-page`` names ``agentguard serve --web``: a rule with ``reauth: {method: passkey}``
sends the client a URL-mode elicitation to ``<page>/stepup/<request>``. The client's user
"opens" it; the proof arrives in the shared store as the page leaves it (the page itself is
tested in a real browser by tests/web/test_stepup.py), and the proxy's guard verifies it
against the policy's trust file before the call runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.types import ElicitRequestURLParams, ElicitResult

from agentguard.reauth.passkey import ReauthStatement, StepUpProof
from agentguard.reauth.passkey_mailbox import proof_slot
from agentguard.store import SQLiteStore
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, make_proxy, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]
pytest.importorskip("webauthn")
from agentguard.testing.passkey import SoftPasskey  # noqa: E402

PAGE = "https://approvals.example.com"
POLICY = """\
version: 1
mode: enforce
trust: trust.yaml
defaults: {unknown_tool: deny, timeout: 30s, on_timeout: deny, deny_cooldown: 0s}
classes:
  read: {require: allow}
  write: {require: allow}
servers: {ops: {trust: trusted}}
rules:
  - id: restart-needs-a-passkey
    match: {server: ops, tool: restart_service}
    class: write
    require: reauth
    reauth: {method: passkey}
    channels: [mcp-elicitation]
"""


def setup(tmp_path: Path) -> tuple[ProxyUnderTest, SoftPasskey]:
    proxy = make_proxy(tmp_path)
    carol = SoftPasskey(label="carol")
    (proxy.policy.parent / "trust.yaml").write_text(yaml.safe_dump(
        {"version": 1, "approvers": [{"id": "carol", "passkeys": [carol.anchor()]}]}))
    proxy.policy.write_text(POLICY)
    return proxy, carol


class Page:
    """The client's user: opens the link; the page leaves a proof made with ``passkey``."""

    def __init__(self, proxy: ProxyUnderTest, passkey: SoftPasskey) -> None:
        self.proxy, self.passkey = proxy, passkey
        self.params: list[Any] = []

    async def __call__(self, ctx: Any, params: Any) -> ElicitResult:
        self.params.append(params)
        if not isinstance(params, ElicitRequestURLParams):
            return ElicitResult(action="cancel")
        request_id = params.url.rsplit("/", 1)[1]
        store = SQLiteStore(str(self.proxy.db))
        await store.open()
        try:
            request = await store.get_request(request_id)  # the call the page shows
            assert request is not None
            statement = ReauthStatement(request.id, request.call_hash, "carol",
                                        int(time.time()))
            proof = StepUpProof(statement, self.passkey.assert_(statement.digest()))
            await store.set_secret(proof_slot(request.id, "carol"),
                                   json.dumps(proof.to_dict()))
        finally:
            await store.close()
        return ElicitResult(action="accept")


async def call_through_proxy(proxy: ProxyUnderTest, user: Page) -> Any:
    port = free_port()
    extra = ("--listen", f"127.0.0.1:{port}", "--principal", "carol",
             "--passkey-page", PAGE)
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox),
                                  name="ops", extra=extra).args]
    async with running(argv, proxy.env(), port, new_session=True):
        url = f"http://127.0.0.1:{port}/mcp"
        async with proxy.client(url, "legacy", elicitation_callback=user) as client:
            return await client.call_tool("restart_service", {"service": "api"})


async def test_a_passkey_step_up_through_the_proxy_lets_the_call_run(tmp_path: Path) -> None:
    proxy, carol = setup(tmp_path)
    user = Page(proxy, carol)
    result = await call_through_proxy(proxy, user)
    assert not result.is_error, result.content[0].text
    assert result.content[0].text == "restarted api (1 restarts)"
    [params] = user.params
    assert params.mode == "url" and params.url.startswith(f"{PAGE}/stepup/")
    assert "passkey" in params.message
    verified = proxy.audit_events("reauth.verified")
    assert [(e["subject"], e["method"]) for e in verified] == [("carol", "passkey")]


async def test_a_proof_made_with_the_agents_own_passkey_runs_nothing(tmp_path: Path) -> None:
    proxy, _ = setup(tmp_path)
    user = Page(proxy, SoftPasskey(label="agent's own"))  # not in the trust file
    result = await call_through_proxy(proxy, user)
    assert result.is_error and "re-authentication" in result.content[0].text
    assert not proxy.audit_events("reauth.verified")
    assert not any(e.get("tool") == "restart_service"
                   for e in proxy.audit_events("call.executed"))
