"""TOTP step-up over MCP URL-mode elicitation: the client gets a link to a page of the HTTP
proxy, the code is POSTed there by the user's browser (here httpx2) and never crosses MCP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pyotp
import pytest
from mcp.types import ElicitRequestURLParams, ElicitResult

from agentguard.reauth import TotpVerifier
from agentguard.store import SQLiteStore
from tests.proxy.conftest import (
    MODES,
    OPS_SERVER,
    PYTHON,
    ROOT,
    ProxyUnderTest,
    free_port,
    make_proxy,
    wait_port,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

SUBJECT = "agent:mcp-client"  # the proxy's default principal
POLICY = """\
version: 1
mode: enforce
defaults: {unknown_tool: deny, timeout: 30s, on_timeout: deny, deny_cooldown: 0s}
classes:
  read: {require: allow}
  write: {require: allow}
servers: {ops: {trust: trusted}}
rules:
  - id: restart-needs-totp
    match: {server: ops, tool: restart_service}
    class: write
    require: reauth
    reauth: {method: totp}
    channels: [mcp-elicitation]
  - id: status-needs-totp-on-the-console
    match: {server: ops, tool: get_status}
    class: write
    require: reauth
    reauth: {method: totp}
"""


async def _setup(tmp_path: Path) -> tuple[ProxyUnderTest, pyotp.TOTP]:
    proxy = make_proxy(tmp_path)
    proxy.policy.write_text(POLICY)
    store = SQLiteStore(str(proxy.db))
    await store.open()
    try:
        enrollment = await TotpVerifier(store).enroll(SUBJECT)
    finally:
        await store.close()
    return proxy, pyotp.TOTP(enrollment.secret)


@asynccontextmanager
async def _serving(proxy: ProxyUnderTest) -> AsyncIterator[str]:
    """The proxy over HTTP, in a new session: no controlling terminal, so the console
    fallback finds nobody to ask instead of prompting whoever runs the tests."""
    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}")).args]
    async with await anyio.open_process(argv, env=proxy.env(), cwd=str(ROOT),
                                        stdin=subprocess.DEVNULL, stdout=None, stderr=None,
                                        start_new_session=True) as proc:
        try:
            await wait_port(port)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            with anyio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()


class LinkFollower:
    """The client's user: opens each link, types a code, then accepts the elicitation."""

    def __init__(self, code: Any) -> None:
        self.code = code
        self.params: list[Any] = []
        self.pages: list[str] = []
        self.posts: list[int] = []
        self.replays: list[int] = []

    async def __call__(self, ctx: Any, params: Any) -> ElicitResult:
        self.params.append(params)
        if not isinstance(params, ElicitRequestURLParams):
            return ElicitResult(action="cancel")
        async with httpx2.AsyncClient(timeout=20) as http:
            page = await http.get(params.url)
            self.pages.append(page.text)
            response = await http.post(params.url, data={"code": self.code()})
            self.posts.append(response.status_code)
            again = await http.post(params.url, data={"code": self.code()})
            self.replays.append(again.status_code)
        return ElicitResult(action="accept")


@pytest.mark.parametrize("mode", MODES)
async def test_the_code_typed_on_the_linked_page_lets_the_call_run(tmp_path: Path,
                                                                   mode: str) -> None:
    proxy, totp = await _setup(tmp_path)
    user = LinkFollower(totp.now)
    async with _serving(proxy) as url, \
            proxy.client(url, mode, elicitation_callback=user) as client:
        result = await client.call_tool("restart_service", {"service": "api"})
    assert not result.is_error, result.content[0].text
    assert result.content[0].text == "restarted api (1 restarts)"
    [params] = user.params
    assert params.mode == "url" and "/agentguard/reauth/" in params.url
    assert SUBJECT in params.message and "restart_service" in params.message
    # The code went to the page, not through MCP: the client only ever saw the link.
    assert totp.now() not in params.message
    assert SUBJECT in user.pages[0] and "<form method='post'>" in user.pages[0]
    assert user.posts == [200] and user.replays == [404]  # the link is single use
    verified = proxy.audit_events("reauth.verified")
    assert [e["subject"] for e in verified] == [SUBJECT]


async def test_a_wrong_code_on_the_page_refuses_the_call(tmp_path: Path) -> None:
    proxy, totp = await _setup(tmp_path)
    nearby = {totp.at(time.time() + 30 * k) for k in (-2, -1, 0, 1, 2)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555")
                 if c not in nearby)
    user = LinkFollower(lambda: wrong)
    async with _serving(proxy) as url, \
            proxy.client(url, "legacy", elicitation_callback=user) as client:
        result = await client.call_tool("restart_service", {"service": "api"})
    assert result.is_error
    text = result.content[0].text
    assert "re-authentication" in text and "failed" in text, text
    assert wrong not in text
    # One fresh link per attempt (the reauthenticator's three), each answered once.
    assert len(user.params) == 3 and len({p.url for p in user.params}) == 3
    assert user.posts == [200, 200, 200] and user.replays == [404, 404, 404]
    failed = proxy.audit_events("reauth.failed")
    assert len(failed) == 1 and failed[0]["outcome"] == "reauth_failed"
    assert not proxy.audit_events("reauth.verified")


async def test_rules_that_do_not_opt_in_never_send_a_link(tmp_path: Path) -> None:
    proxy, totp = await _setup(tmp_path)
    user = LinkFollower(totp.now)
    async with _serving(proxy) as url, \
            proxy.client(url, "legacy", elicitation_callback=user) as client:
        result = await client.call_tool("get_status", {"service": "api"})
    # The console fallback has no terminal here: unreachable, refused, and no link sent.
    assert result.is_error and "unreachable" in result.content[0].text
    assert user.params == []
