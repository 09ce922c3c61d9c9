"""TOTP step-up over MCP URL-mode elicitation: the client gets a link to a page of the HTTP
proxy, the code is POSTed there by the user's browser (here httpx2) and never crosses MCP.
The link's base is ``--public-url`` when given, and the client hears
``notifications/elicitation/complete`` when the page got its code or the link expired."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pyotp
import pytest
from mcp import Client
from mcp.server import Server
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ElicitCompleteNotification,
    ElicitRequestURLParams,
    ElicitResult,
    ListToolsResult,
    TextContent,
    Tool,
)

from agentguard.proxy.askers import PushAsker
from agentguard.proxy.reauth_url import ReauthLinks, reauth_asker
from agentguard.reauth import TotpVerifier
from agentguard.reauth.seal import SeedSeal
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest, ApprovalSpec
from tests.proxy.conftest import (
    MODES,
    OPS_SERVER,
    PYTHON,
    ProxyUnderTest,
    free_port,
    make_proxy,
    running,
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


async def _setup(tmp_path: Path, policy: str = POLICY) -> tuple[ProxyUnderTest, pyotp.TOTP]:
    proxy = make_proxy(tmp_path)
    proxy.policy.write_text(policy)
    store = SQLiteStore(str(proxy.db))
    await store.open()
    try:
        # Sealed under the key the proxy reads from its home, as `agentguard reauth enroll`
        # would do.
        seal = SeedSeal.from_file(proxy.home / "totp-seed.key")
        enrollment = await TotpVerifier(store, seal=seal).enroll(SUBJECT)
    finally:
        await store.close()
    return proxy, pyotp.TOTP(enrollment.secret)


@asynccontextmanager
async def _serving(proxy: ProxyUnderTest, public_url: str | None = None,
                   stderr: Path | None = None) -> AsyncIterator[str]:
    """The proxy over HTTP, in a new session: no controlling terminal, so the console
    fallback finds nobody to ask instead of prompting whoever runs the tests.

    ``public_url`` may say ``{port}``: the port the proxy listens on. ``stderr`` keeps its
    log in a file.
    """
    port = free_port()
    extra = ("--listen", f"127.0.0.1:{port}")
    if public_url is not None:
        extra += ("--public-url", public_url.format(port=port))
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=extra).args]
    async with running(argv, proxy.env(), port, log=stderr, new_session=True):
        yield f"http://127.0.0.1:{port}/mcp"


class LinkFollower:
    """The client's user: opens each link, types a code, then accepts the elicitation.

    Args:
        code: The code to type (called once per POST); ``None`` only opens the page.
        reach: Where the user's browser really goes for a link (a reverse proxy's job).
    """

    def __init__(self, code: Callable[[], str] | None,
                 reach: Callable[[str], str] = lambda url: url) -> None:
        self.code = code
        self.reach = reach
        self.params: list[Any] = []
        self.pages: list[str] = []
        self.posts: list[int] = []
        self.replays: list[int] = []

    async def __call__(self, ctx: Any, params: Any) -> ElicitResult:
        self.params.append(params)
        if not isinstance(params, ElicitRequestURLParams):
            return ElicitResult(action="cancel")
        url = self.reach(params.url)
        async with httpx2.AsyncClient(timeout=20) as http:
            page = await http.get(url)
            self.pages.append(page.text)
            if self.code is not None:
                response = await http.post(url, data={"code": self.code()})
                self.posts.append(response.status_code)
                again = await http.post(url, data={"code": self.code()})
                self.replays.append(again.status_code)
        return ElicitResult(action="accept")


class Completions:
    """The client's message handler: records ``notifications/elicitation/complete``."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, ElicitCompleteNotification):
            self.ids.append(message.params.elicitation_id)
            self._arrived.set()

    async def wait(self, count: int) -> list[str]:
        """The ids once ``count`` arrived (delivery may trail the call's result a little)."""
        with anyio.fail_after(20):
            while len(self.ids) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.ids


@pytest.mark.parametrize("mode", MODES)
async def test_the_code_typed_on_the_linked_page_lets_the_call_run(tmp_path: Path,
                                                                   mode: str) -> None:
    proxy, totp = await _setup(tmp_path)
    user = LinkFollower(totp.now)
    done = Completions()
    async with _serving(proxy) as url, \
            proxy.client(url, mode, elicitation_callback=user, message_handler=done) as client:
        result = await client.call_tool("restart_service", {"service": "api"})
        if mode == "legacy":
            # The page got its code: the client hears the elicitation is complete.
            assert await done.wait(1) == [user.params[0].elicitation_id]
        else:
            # 2026-07-28 has no such notification: the retry's result tells the outcome.
            assert done.ids == []
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
    done = Completions()
    async with _serving(proxy) as url, \
            proxy.client(url, "legacy", elicitation_callback=user,
                         message_handler=done) as client:
        result = await client.call_tool("restart_service", {"service": "api"})
        ids = await done.wait(3)
    assert ids == [p.elicitation_id for p in user.params]  # each link's own completion
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


async def test_an_expired_link_is_completed_and_dead() -> None:
    # A reauth-only hold expires after minutes; a clock past the expiry stands in for them.
    # The server is the SDK's own, in-process, asking through the proxy's PushAsker.
    links = ReauthLinks("http://127.0.0.1:9", _nobody, clock=lambda: time.time() + 3600)
    request = ApprovalRequest(
        id="req-1", call={"tool": "restart_service", "server": "ops"}, call_hash="0" * 64,
        created_at=time.time(), expires_at=time.time() + 300, rule_id=None, reason="test",
        privilege="write", labels=(),
        approval=ApprovalSpec(quorum=0, channels=("mcp-elicitation",)))
    asked: list[ElicitRequestURLParams] = []

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        with reauth_asker(PushAsker(ctx)):
            code = await links.ask_code(SUBJECT, request, 1)
        return CallToolResult(content=[TextContent(type="text", text=repr(code))])

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="restart_service", input_schema={
            "type": "object"})])

    async def opened(ctx: Any, params: Any) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept")  # the user opens the link, and walks away

    done = Completions()
    server = Server("reauth-test", on_call_tool=call_tool, on_list_tools=list_tools)
    async with Client(server, mode="legacy", elicitation_callback=opened,
                      message_handler=done) as client:
        result = await client.call_tool("restart_service", {})
        ids = await done.wait(1)
    [params] = asked
    assert result.content[0].text == "None"  # no code: the reauthenticator refuses
    assert ids == [params.elicitation_id]
    page = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=links.wrap(_no_app)))
    async with page:
        late = await page.post(params.url, data={"code": "123456"})
    assert late.status_code == 404  # the expired link is dead


async def _nobody(subject: str, request: ApprovalRequest, attempt: int) -> str | None:
    raise AssertionError("the console fallback must not be asked")


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the page must not fall through to the MCP app")


async def test_links_point_under_the_public_url(tmp_path: Path) -> None:
    proxy, totp = await _setup(tmp_path)
    public = "https://agentguard.example/ag"
    log = tmp_path / "proxy.log"
    async with _serving(proxy, public + "/", stderr=log) as url:
        # What a reverse proxy would do: strip its prefix and pass the rest to the proxy.
        here = url.removesuffix("/mcp")
        user = LinkFollower(totp.now, reach=lambda link: here + link.removeprefix(public))
        async with proxy.client(url, "legacy", elicitation_callback=user) as client:
            result = await client.call_tool("restart_service", {"service": "api"})
    assert not result.is_error, result.content[0].text
    [params] = user.params
    assert params.url.startswith(f"{public}/agentguard/reauth/")  # trailing "/" trimmed
    assert user.posts == [200]
    assert "in clear" not in log.read_text()


async def test_a_cleartext_public_url_is_warned_about_at_start(tmp_path: Path) -> None:
    proxy, _ = await _setup(tmp_path)
    log = tmp_path / "proxy.log"
    async with _serving(proxy, "http://agentguard.example:{port}", stderr=log):
        pass
    text = log.read_text()
    assert "http://agentguard.example:" in text and "travel in clear" in text, text
