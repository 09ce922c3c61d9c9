"""Passkey step-up (``reauth: {method: passkey}``) through the web page, in a real headless
Chromium with a CDP virtual authenticator: the guard holds a call acting for dave, dave opens
the link, reads the call and confirms with his passkey; the guard checks the proof against the
trust file and the call hash it holds. The agent (which writes the store) moves a proof made by
another person, or for another request, into dave's slot: nothing runs."""

from __future__ import annotations

import re
from concurrent.futures import Future
from typing import Any

import pytest

from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.types import CallContext, Principal, ToolCall
from tests.web.conftest import Site, wait_until

pytestmark = pytest.mark.browser

POLICY = """
trust: trust.yaml
classes:
  read: {require: allow}
  privileged: {require: reauth, reauth: {method: passkey}}
rules: [{id: reset, match: {tool: reset_password}, class: privileged}]
"""

_n = iter(range(10**6))


class Held:
    """A call held for dave's step-up, running on the site's loop."""

    def __init__(self, site: Site, links: dict[str, str]) -> None:
        from agentguard import Guard, load_policy
        from agentguard.reauth.passkey import PasskeyReauthenticator
        from agentguard.reauth.passkey_mailbox import MailboxStepUp
        from agentguard.trust import TrustAnchors

        self.site = site
        (site.dir / "stepup-policy.yaml").write_text(POLICY)
        self.store = SQLiteStore(site.dir / "state.db")
        self.audit = MemoryAuditLog()
        self.call = ToolCall(tool="reset_password", args={"account": f"dave-{next(_n)}"},
                             principal=Principal("agent:helpdesk"),
                             context=CallContext(acting_for="dave"))

        def announce(subject: str, link: str, request: Any) -> None:
            links[subject] = link

        async def run() -> Any:
            ask = MailboxStepUp(self.store, site.url, announce=announce, poll=0.05)
            guard = Guard(load_policy(site.dir / "stepup-policy.yaml"), store=self.store,
                          audit=self.audit, reauthenticators={
                              "passkey": PasskeyReauthenticator(TrustAnchors.load(site.trust),
                                                                ask, max_attempts=1)})
            return await guard.authorize(self.call)

        import asyncio

        self.future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), site.loop.loop)

    def result(self) -> Any:
        return self.future.result(30)


def hold(site: Site) -> tuple[Held, str]:
    links: dict[str, str] = {}
    held = Held(site, links)
    wait_until(lambda: "dave" in links)
    return held, links["dave"]


def step_up(page: Any, link: str) -> str:
    page.goto(link)
    page.click("#stepup")
    page.locator("#status", has_text=re.compile(r"^(?!confirm).+")).wait_for()
    return page.text_content("#status")


def test_dave_steps_up_with_his_passkey_and_the_call_runs(
    site: Site, enrolled: dict[str, Any]
) -> None:
    held, link = hold(site)
    page = enrolled["dave"]
    page.goto(link)
    assert held.call.args["account"] in page.text_content("#call-text")
    assert "step-up done" in step_up(page, link)
    result = held.result()
    assert result.outcome == "approved", result.reason
    assert any(e["type"] == "reauth.verified" and e["method"] == "passkey"
               for e in held.audit.events)


def test_a_proof_by_someone_else_moved_into_daves_slot_runs_nothing(
    site: Site, enrolled: dict[str, Any]
) -> None:
    from agentguard.reauth.passkey_mailbox import proof_slot

    held, link = hold(site)
    rid = link.rsplit("/", 1)[1]
    assert "step-up done" in step_up(enrolled["mallory"], link)  # mallory's own, genuine proof
    mallorys = site.loop.run(held.store.get_secret(proof_slot(rid, "mallory")))
    assert mallorys
    site.loop.run(held.store.set_secret(proof_slot(rid, "dave"), mallorys))  # the agent
    result = held.result()
    assert result.outcome == "reauth_failed" and "mallory" in result.reason


def test_daves_proof_for_another_request_runs_nothing(
    site: Site, enrolled: dict[str, Any]
) -> None:
    from agentguard.reauth.passkey_mailbox import proof_slot

    first, first_link = hold(site)
    assert "step-up done" in step_up(enrolled["dave"], first_link)
    assert first.result().outcome == "approved"
    second, second_link = hold(site)
    proof = site.loop.run(first.store.get_secret(
        proof_slot(first_link.rsplit("/", 1)[1], "dave")))
    site.loop.run(second.store.set_secret(
        proof_slot(second_link.rsplit("/", 1)[1], "dave"), proof))  # replayed by the agent
    result = second.result()
    assert result.outcome == "reauth_failed" and "another request" in result.reason


def test_a_step_up_without_user_verification_is_refused_by_the_page(
    site: Site, enrolled: dict[str, Any], browser: Any
) -> None:
    from agentguard.reauth.passkey_mailbox import proof_slot
    from tests.web.test_browser import as_someone_else

    held, link = hold(site)
    rid = link.rsplit("/", 1)[1]
    page = as_someone_else(browser, enrolled["dave"], user_verified=False)
    page.goto(link)
    answer = page.evaluate(SCRIPT_WITHOUT_UV, rid)
    assert answer["httpStatus"] == 403 and "verif" in answer["error"], answer
    assert site.loop.run(held.store.get_secret(proof_slot(rid, "dave"))) is None
    held.future.cancel()


SCRIPT_WITHOUT_UV = """async (id) => {
  const ag = window.agentguard;
  const opened = await ag.postJSON(`/api/stepup/${id}/options`, {});
  opened.options.userVerification = "discouraged";  // the page asks for "required"
  const credential = await ag.getAssertion(opened.options);
  return await ag.postJSON(`/api/stepup/${id}/verify`, {nonce: opened.nonce, credential});
}"""
