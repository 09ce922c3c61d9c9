"""The web approval page in a real headless Chromium, with a virtual passkey per approver.

The server is ``agentguard serve --web`` in its own process; the guard holding the calls runs
here under ``assurance: signed`` and counts only receipts that verify against the trust file.
The attacks are the agent's: it can script a browser, replay what it saw and register its
own authenticator, but it holds no approver's enrolled passkey.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.trust import PasskeyVote, TrustAnchors, receipt_from_dict
from agentguard.types import CallContext, Principal, ToolCall
from tests.web.conftest import Mailbox, Site, new_page, register

pytestmark = pytest.mark.browser


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def guard(site: Site, enrolled: dict[str, Any]) -> Any:
    """The guard, loaded after the passkeys were enrolled (it reads the trust file once)."""
    from agentguard import Guard, load_policy

    async def make() -> Any:
        return Guard(load_policy(site.dir / "policy.yaml"),
                     store=SQLiteStore(site.dir / "state.db"), audit=MemoryAuditLog(),
                     channels=[Mailbox()])

    return site.loop.run(make())


_counter = iter(range(10**6))


def call(tool: str = "deploy", principal: str = "agent:ops", **args: Any) -> ToolCall:
    args = {"service": "billing", "version": f"v{next(_counter)}"} | args
    return ToolCall(tool=tool, args=args, principal=Principal(principal),
                    context=CallContext(acting_for="mallory"))


def authorize(site: Site, guard: Any, held_call: ToolCall) -> Any:
    return site.loop.run(guard.authorize(held_call, wait=0))


def hold(site: Site, guard: Any, held_call: ToolCall) -> str:
    first = authorize(site, guard, held_call)
    assert first.outcome == "pending" and first.request_id, first
    return first.request_id


def stored(site: Site, guard: Any, request_id: str) -> Any:
    return site.loop.run(guard.store.get_request(request_id))


def open_request(page: Any, site: Site, request_id: str) -> None:
    page.goto(f"{site.url}/requests/{request_id}")


def status_after(page: Any, selector: str) -> str:
    page.click(selector)
    page.locator("#status", has_text=re.compile(r"^(?!confirm).+")).wait_for()
    return page.text_content("#status")


# What the request page displays: the hash of the call it showed, which a vote names.
SHOWN_OF = """const shownOf = async (id) => new DOMParser().parseFromString(
    await (await fetch(`/requests/${id}`)).text(), "text/html")
  .getElementById("vote-form").dataset.shown;
"""

SCRIPT_OTHER_REQUEST = """async ([a, b]) => {
  const ag = window.agentguard;
  """ + SHOWN_OF + """
  const body = () => ({decision: "approve", reason: "", grant_ttl: 0});
  const forA = await ag.postJSON(`/api/requests/${a}/options`,
                                 {...body(), shown: await shownOf(a)});
  const forB = await ag.postJSON(`/api/requests/${b}/options`,
                                 {...body(), shown: await shownOf(b)});
  const assertionForA = await ag.getAssertion(forA.options);
  return await ag.postJSON(`/api/requests/${b}/vote`,
                           {nonce: forB.nonce, credential: assertionForA});
}"""

SCRIPT_REPLAY = """async (id) => {
  const ag = window.agentguard;
  """ + SHOWN_OF + """
  const body = {decision: "approve", reason: "", grant_ttl: 0, shown: await shownOf(id)};
  const opened = await ag.postJSON(`/api/requests/${id}/options`, body);
  const credential = await ag.getAssertion(opened.options);
  const first = await ag.postJSON(`/api/requests/${id}/vote`, {nonce: opened.nonce, credential});
  const sameNonce = await ag.postJSON(`/api/requests/${id}/vote`,
                                      {nonce: opened.nonce, credential});
  const reopened = await ag.postJSON(`/api/requests/${id}/options`, body);
  const freshNonce = await ag.postJSON(`/api/requests/${id}/vote`,
                                       {nonce: reopened.nonce, credential});
  return {first, sameNonce, freshNonce};
}"""

SCRIPT_WITHOUT_UV = """async (id) => {
  const ag = window.agentguard;
  """ + SHOWN_OF + """
  const opened = await ag.postJSON(`/api/requests/${id}/options`,
      {decision: "approve", reason: "", grant_ttl: 0, shown: await shownOf(id)});
  opened.options.userVerification = "discouraged";  // the page asks for "required"
  const credential = await ag.getAssertion(opened.options);
  return await ag.postJSON(`/api/requests/${id}/vote`, {nonce: opened.nonce, credential});
}"""

SCRIPT_OWN_PASSKEY = """async (id) => {
  const ag = window.agentguard;
  await navigator.credentials.create({publicKey: {
    rp: {id: "localhost", name: "agent"}, challenge: new Uint8Array(32),
    user: {id: new Uint8Array([1, 2, 3]), name: "dave", displayName: "dave"},
    pubKeyCredParams: [{type: "public-key", alg: -7}],
    authenticatorSelection: {residentKey: "required", userVerification: "required"}}});
  """ + SHOWN_OF + """
  const opened = await ag.postJSON(`/api/requests/${id}/options`,
      {decision: "approve", reason: "", grant_ttl: 0, shown: await shownOf(id)});
  opened.options.allowCredentials = [];  // let the agent's own discoverable passkey answer
  const credential = await ag.getAssertion(opened.options);
  return await ag.postJSON(`/api/requests/${id}/vote`, {nonce: opened.nonce, credential});
}"""


def as_someone_else(browser: Any, owner: Any, *, user_verified: bool = True,
                    copy_passkey: bool = True) -> Any:
    """A page with ``owner``'s session cookie (and, optionally, a copy of their passkey in an
    authenticator that does or does not verify the user)."""
    page = new_page(browser, user_verified=user_verified)
    page.context.add_cookies(owner.context.cookies())
    if copy_passkey:
        creds = owner.cdp.send("WebAuthn.getCredentials",
                               {"authenticatorId": owner.authenticator})["credentials"]
        for cred in creds:
            page.cdp.send("WebAuthn.addCredential",
                          {"authenticatorId": page.authenticator, "credential": cred})
    return page


# --------------------------------------------------------------------------- enrolment
def test_passkeys_are_registered_through_enrolment_links_into_the_trust_file(
        site: Site, browser: Any, enrolled: dict[str, Any]) -> None:
    anchors = TrustAnchors.load(site.trust)
    for who in ("dave", "erin", "frank", "mallory"):
        (passkey,) = anchors.approver(who).passkeys
        assert (passkey.rp_id, passkey.origin, passkey.label) == (
            "localhost", site.url, f"{who}'s laptop")
    link = site.enrol_link("frank", signer="dave")  # dave is an admin
    assert "registered for frank" in register(new_page(browser), link, "frank's phone")
    assert "already used" in register(new_page(browser), link, "again")
    refused = register(new_page(browser), site.enrol_link("frank", signer="erin"), "x")
    assert "only for themself" in refused
    assert len(TrustAnchors.load(site.trust).approver("frank").passkeys) == 2
    data = yaml.safe_load(site.trust.read_text())
    assert data["admins"] == ["dave"]


def test_sign_in_needs_the_approvers_own_passkey(
        site: Site, browser: Any, enrolled: dict[str, Any]) -> None:
    page = new_page(browser)  # an authenticator with no enrolled passkey
    page.goto(f"{site.url}/")
    assert page.url == f"{site.url}/login"
    page.select_option("#approver", "dave")
    page.click("#login")
    page.locator("#status.error").wait_for(timeout=15000)
    page.goto(f"{site.url}/")
    assert page.url == f"{site.url}/login"


# --------------------------------------------------------------------------- votes
def test_approve(site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    held_call = call()
    rid = hold(site, guard, held_call)
    page = enrolled["dave"]
    open_request(page, site, rid)
    assert "approved; request is approved" in status_after(page, "#approve")
    run = authorize(site, guard, held_call)
    assert run.outcome == "approved" and run.approvers == ("dave",)
    (vote,) = stored(site, guard, rid).votes
    receipt = receipt_from_dict(vote.receipt)
    assert isinstance(receipt, PasskeyVote) and receipt.statement.request_id == rid
    assert any("passkey_assertion" in r for e in guard.audit.events
               for r in e.get("receipts", ()))


def test_deny_with_a_reason(site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    held_call = call()
    rid = hold(site, guard, held_call)
    page = enrolled["erin"]
    open_request(page, site, rid)
    page.fill("#reason", "change freeze until Monday <b>")
    assert "denied; request is denied" in status_after(page, "#deny")
    run = authorize(site, guard, held_call)
    assert run.outcome == "denied" and "change freeze until Monday <b>" in run.reason
    (vote,) = stored(site, guard, rid).votes
    assert vote.reason == "change freeze until Monday <b>"
    assert receipt_from_dict(vote.receipt).statement.decision == "deny"


def test_approve_for_15_minutes(site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    held_call = call("deploy_staging")  # a rule without assurance: signed
    rid = hold(site, guard, held_call)
    page = enrolled["frank"]
    open_request(page, site, rid)
    labels = page.locator("button.grant").all_text_contents()
    assert labels == ["Approve for 15m", "Approve for 1h"]  # max_grant: 1h
    assert "request is approved" in status_after(page, "button.grant >> nth=0")
    (vote,) = stored(site, guard, rid).votes
    assert vote.grant_ttl == 900.0
    assert receipt_from_dict(vote.receipt).statement.grant_ttl == 900.0  # what frank confirmed
    assert authorize(site, guard, held_call).outcome == "approved"
    (grant,) = site.loop.run(guard.store.list_grants())
    assert 850 < grant.expires_at - time.time() <= 900 and grant.tool == "deploy_staging"
    later = authorize(site, guard, call("deploy_staging"))  # another version, same grant
    assert later.outcome in ("allowed", "approved") and later.request_id is None, later


def test_a_signed_approve_for_15m_covers_the_same_rule_caller_and_human_only(
        site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    """Under assurance: signed the passkey signs the grant asked for; the guard's grant
    carries that signature and covers later deploys of the same caller for the same human,
    and nobody else's."""
    held_call = call(principal="agent:grants")
    rid = hold(site, guard, held_call)
    page = enrolled["frank"]
    open_request(page, site, rid)
    labels = page.locator("button.grant").all_text_contents()
    assert labels == ["Approve for 15m", "Approve for 1h"]
    assert "request is approved" in status_after(page, "button.grant >> nth=0")
    assert authorize(site, guard, held_call).outcome == "approved"
    (grant,) = [g for g in site.loop.run(guard.store.list_grants())
                if g.principal == "agent:grants"]
    assert len(grant.receipts) == 1 and grant.shown is not None
    later = authorize(site, guard, call(principal="agent:grants"))  # another version
    assert later.outcome == "approved" and later.request_id is None, later
    assert later.approvers == ("frank",)
    other = authorize(site, guard, call(principal="agent:other"))
    assert other.outcome == "pending", other
    too_long = page.evaluate("""async (id) => (await window.agentguard.postJSON(
        `/api/requests/${id}/options`, {decision: "approve", reason: "", grant_ttl: 7200}))""",
                             other.request_id)
    assert too_long["httpStatus"] == 400, too_long


def test_an_assertion_made_for_another_request_is_refused(
        site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    a, b = hold(site, guard, call()), hold(site, guard, call())
    page = enrolled["dave"]
    page.goto(f"{site.url}/")
    answer = page.evaluate(SCRIPT_OTHER_REQUEST, [a, b])
    assert answer["httpStatus"] == 403 and "challenge" in answer["error"].lower(), answer
    assert stored(site, guard, b).votes == () and stored(site, guard, a).votes == ()


def test_an_assertion_without_user_verification_is_refused(
        site: Site, browser: Any, guard: Any, enrolled: dict[str, Any]) -> None:
    """dave's passkey copied into an authenticator that only tests presence (a touch)."""
    held_call = call()
    rid = hold(site, guard, held_call)
    page = as_someone_else(browser, enrolled["dave"], user_verified=False)
    open_request(page, site, rid)
    assert "NotAllowedError" in status_after(page, "#approve")  # the honest page asks for UV
    answer = page.evaluate(SCRIPT_WITHOUT_UV, rid)  # a script that does not
    assert answer["httpStatus"] == 403 and "verif" in answer["error"].lower(), answer
    assert stored(site, guard, rid).votes == ()
    assert authorize(site, guard, held_call).outcome == "pending"


def test_a_replayed_assertion_is_refused(
        site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    rid = hold(site, guard, call("rotate_credentials"))
    page = enrolled["dave"]
    page.goto(f"{site.url}/")
    answers = page.evaluate(SCRIPT_REPLAY, rid)
    assert answers["first"]["ok"], answers
    assert answers["sameNonce"]["httpStatus"] == 400  # the ceremony was used
    fresh = answers["freshNonce"]
    assert fresh["httpStatus"] == 403, fresh  # refused before it reaches the store
    assert "replayed" in fresh["error"] or "challenge" in fresh["error"].lower(), fresh
    assert len(stored(site, guard, rid).votes) == 1


def test_a_non_approvers_passkey_is_refused(
        site: Site, browser: Any, guard: Any, enrolled: dict[str, Any]) -> None:
    held_call = call()
    rid = hold(site, guard, held_call)
    mallory = enrolled["mallory"]  # enrolled in the trust file, not an approver of this rule
    open_request(mallory, site, rid)
    assert "not an approver for this rule" in status_after(mallory, "#approve")
    agent = as_someone_else(browser, enrolled["dave"], copy_passkey=False)
    agent.goto(f"{site.url}/")  # dave's session, the agent's own passkey
    answer = agent.evaluate(SCRIPT_OWN_PASSKEY, rid)
    assert answer["httpStatus"] == 403 and "not in the trust file" in answer["error"], answer
    assert stored(site, guard, rid).votes == ()
    assert authorize(site, guard, held_call).outcome == "pending"


def test_two_of_three_is_met_only_by_two_approvers(
        site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    held_call = call("rotate_credentials", account="root")
    rid = hold(site, guard, held_call)
    dave, erin = enrolled["dave"], enrolled["erin"]
    open_request(dave, site, rid)
    assert "request is pending" in status_after(dave, "#approve")
    assert authorize(site, guard, held_call).outcome == "pending"
    open_request(dave, site, rid)  # dave again: one person counts once
    assert "already voted" in status_after(dave, "#approve")
    assert authorize(site, guard, held_call).outcome == "pending"
    open_request(erin, site, rid)
    assert "request is approved" in status_after(erin, "#approve")
    run = authorize(site, guard, held_call)
    assert run.outcome == "approved" and set(run.approvers) == {"dave", "erin"}


# --------------------------------------------------------------------------- what is shown
def test_the_pages_show_every_argument_escaped_and_in_full(
        site: Site, guard: Any, enrolled: dict[str, Any]) -> None:
    long = "".join(f"{i:04d} " for i in range(1200))  # 6000 characters, never cut
    held_call = call(principal="agent:display", note="<script>window.pwned = 1</script>",
                     file="report\u202egpj.exe", steps=long)
    rid = hold(site, guard, held_call)
    page = enrolled["dave"]
    page.goto(f"{site.url}/")
    assert page.locator(f"a[href='/requests/{rid}']").count() == 1
    inbox = page.text_content("table.inbox")
    assert "deploy" in inbox and "class 'deploy' requires approve" in inbox
    shots = os.environ.get("AGENTGUARD_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "web-inbox.png"), full_page=True)
    open_request(page, site, rid)
    text = page.text_content("#call-text")
    assert "<script>window.pwned = 1</script>" in text  # shown as text...
    assert page.evaluate("window.pwned") is None  # ...never run
    assert "report\\u202egpj.exe" in text and "\u202e" not in text
    assert long.strip() in text.replace("\n", "")
    facts = page.text_content("dl.facts")
    assert "deploy-prod" in facts and "class 'deploy' requires approve" in facts
    left = page.text_content("#countdown")
    time.sleep(1.1)
    assert page.text_content("#countdown") != left and left.endswith("left")
    if shots:  # a call of ordinary size for the README
        note = "<script>alert(1)</script> \u202eevil"
        shown = hold(site, guard, call(principal="agent:release-bot", service="billing-api",
                                       version="v2.14.1", note=note))
        open_request(page, site, shown)
        page.screenshot(path=str(Path(shots) / "web-request.png"), full_page=True)
