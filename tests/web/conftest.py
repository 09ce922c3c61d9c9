"""A real ``agentguard serve --web`` in a subprocess, Debian's Chromium driven by Playwright with
a CDP virtual authenticator per approver, and a guard in this process holding calls on the
same SQLite store. Nothing reaches the network beyond 127.0.0.1; no browser is downloaded.

Everything here is module-scoped: the server, the browser, and each approver's passkey
(registered through the page with an enrolment link, in the ``enrolled`` fixture).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentguard.trust import generate_key
from agentguard.trust.enrol import make_enrolment_token
from agentguard.trust.keys import public_key_text

CHROMIUM = "/usr/bin/chromium"
APPROVERS = ("dave", "erin", "frank")
POLICY = """
trust: trust.yaml
defaults: {timeout: 1h}
classes:
  read: {require: allow}
  deploy: {require: approve, approvers: [dave, erin, frank], max_grant: 1h,
           separation_of_duties: true, assurance: signed}
  staging: {require: approve, approvers: [dave, erin, frank], max_grant: 1h}
  privileged: {require: approve, approvers: [dave, erin, frank], quorum: 2,
               separation_of_duties: true, assurance: signed}
rules:
  - {id: deploy-prod, match: {tool: deploy}, class: deploy,
     description: "production deploys need a human"}
  - {id: deploy-staging, match: {tool: deploy_staging}, class: staging}
  - {id: rotate-root, match: {tool: rotate_credentials}, class: privileged,
     description: "root credentials: two approvers"}
"""


def chromium_or_skip() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("webauthn", reason="py_webauthn is not installed")


class Loop:
    """An event loop on its own thread, for the guard and store while Playwright's sync API
    owns the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Mailbox:
    """A channel that presents a request and lets the store carry every answer."""

    name = "terminal"
    verified = True

    async def present(self, request: Any) -> str | None:
        return None

    async def ask(self, request: Any) -> AsyncIterator[Any]:
        await anyio.sleep_forever()
        yield None  # pragma: no cover

    async def settled(self, request: Any) -> None:
        return None


@dataclass
class Site:
    """The running server, its files and the approvers' Ed25519 keys (for enrolment links)."""

    url: str
    dir: Path
    keys: dict[str, Any]
    process: subprocess.Popen[bytes]
    loop: Loop
    passkeys: dict[str, Any] = field(default_factory=dict)  # approver -> browser Page

    @property
    def trust(self) -> Path:
        return self.dir / "trust.yaml"

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.dir / 'state.db'}"

    def enrol_link(self, name: str, signer: str | None = None) -> str:
        token = make_enrolment_token(name, self.keys[signer or name])
        return f"{self.url}/enroll#{token}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    work = tmp_path_factory.mktemp("web")
    keys = {who: generate_key(work / "keys" / f"{who}.key") for who in (*APPROVERS, "mallory")}
    trust = {"version": 1, "admins": ["dave"], "approvers": [
        {"id": who, "keys": [public_key_text(k.public_key())], "passkeys": []}
        for who, k in keys.items()]}
    (work / "trust.yaml").write_text(yaml.safe_dump(trust, sort_keys=False))
    (work / "policy.yaml").write_text(POLICY)
    port = _free_port()
    url = f"http://localhost:{port}"
    agentguard = shutil.which("agentguard", path=str(Path(sys.executable).parent))
    assert agentguard
    process = subprocess.Popen(
        [agentguard, "serve", "--web", "--trust", str(work / "trust.yaml"),
         "--store", f"sqlite:///{work / 'state.db'}", "--audit", str(work / "serve.jsonl"),
         "--host", "127.0.0.1", "--port", str(port), "--origin", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert "listening on" in line, line + process.stdout.read().decode()
    loop = Loop()
    yield Site(url, work, keys, process, loop)
    loop.close()
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield instance
        instance.close()


def new_page(browser: Any, *, user_verified: bool = True) -> Any:
    """A fresh context and page with its own virtual authenticator (``page.authenticator``)."""
    context = browser.new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": user_verified,
        "automaticPresenceSimulation": True}})
    page.cdp, page.authenticator = cdp, added["authenticatorId"]
    return page


def register(page: Any, link: str, label: str) -> str:
    """Open an enrolment link and register a passkey; returns the status line."""
    page.goto(link)
    page.fill("#label", label)
    page.click("#enroll")
    # Locator waits: the page's CSP forbids the eval that wait_for_function needs.
    page.locator("#status", has_text=re.compile("registered|failed|not|expired|already|verif"
                                                 "|only")).wait_for()
    return page.text_content("#status")


def sign_in(page: Any, site: Site, who: str) -> None:
    page.goto(f"{site.url}/login")
    page.select_option("#approver", who)
    page.click("#login")
    page.wait_for_url(f"{site.url}/")


@pytest.fixture(scope="module")
def enrolled(site: Site, browser: Any) -> dict[str, Any]:
    """dave, erin, frank and mallory register a passkey each through the page, then sign in."""
    pages = {}
    for who in (*APPROVERS, "mallory"):
        page = new_page(browser)
        status = register(page, site.enrol_link(who), f"{who}'s laptop")
        assert f"passkey registered for {who}" in status, status
        sign_in(page, site, who)
        pages[who] = page
    site.passkeys = pages
    return pages


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
