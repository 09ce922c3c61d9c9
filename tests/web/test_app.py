"""The web page's server side without a browser: a software passkey (the same assertion format a
browser sends) against the real Starlette app over ASGI, and a real guard on SQLite.

These run where Chromium is missing; ``test_browser.py`` checks the same flows in Chromium.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentguard import Guard, load_policy
from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.testing.passkey import ORIGIN, SoftPasskey
from agentguard.trust import generate_key
from agentguard.trust.keys import public_key_text
from agentguard.trust.passkey import b64url_decode
from agentguard.types import CallContext, Principal, ToolCall
from agentguard.web import WebApproval
from agentguard.web.app import COOKIE
from agentguard.web.ceremonies import Sessions
from tests.web.conftest import POLICY, Mailbox

pytest.importorskip("webauthn")
pytestmark = pytest.mark.anyio


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    passkeys = {who: SoftPasskey(label=who) for who in ("dave", "erin", "frank")}
    trust = {"version": 1, "approvers": [
        {"id": who, "keys": [public_key_text(generate_key(tmp_path / f"{who}.key")
                                              .public_key())],
         "passkeys": [pk.anchor()]} for who, pk in passkeys.items()]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    (tmp_path / "policy.yaml").write_text(POLICY)
    store, audit = SQLiteStore(tmp_path / "s.db"), MemoryAuditLog()
    guard = Guard(load_policy(tmp_path / "policy.yaml"), store=store, audit=audit,
                  channels=[Mailbox()])
    web = WebApproval(store=store, audit=audit, trust_path=tmp_path / "trust.yaml",
                      origin=ORIGIN, rp_id="localhost")
    return {"guard": guard, "web": web, "passkeys": passkeys, "audit": audit,
            "db": tmp_path / "s.db"}


def client(world: dict[str, Any]) -> httpx.AsyncClient:
    from agentguard.cli.serve_cmd import build_app

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(world["web"].routes())),
                             base_url=ORIGIN)


def deploy(version: str = "v1") -> ToolCall:
    return ToolCall(tool="deploy", args={"service": "billing", "version": version},
                    principal=Principal("agent:ops"), context=CallContext(acting_for="mallory"))


async def held(world: dict[str, Any], call: ToolCall) -> str:
    first = await world["guard"].authorize(call, wait=0)
    assert first.outcome == "pending"
    return first.request_id


def challenge(options: dict[str, Any]) -> bytes:
    return b64url_decode(options["challenge"])


async def sign_in(http: httpx.AsyncClient, who: str, passkey: SoftPasskey) -> httpx.Response:
    opened = (await http.post("/api/login/options", json={"approver": who})).json()
    return await http.post("/api/login/verify", json={
        "nonce": opened["nonce"], "credential": passkey.assert_(challenge(opened["options"]))})


async def vote(http: httpx.AsyncClient, rid: str, passkey: SoftPasskey,
               **body: Any) -> httpx.Response:
    page = await http.get(f"/requests/{rid}")
    shown = re.search(r'data-shown="([0-9a-f]*)"', page.text)
    body = {"decision": "approve", "reason": "", "grant_ttl": 0,
            "shown": shown.group(1) if shown else ""} | body
    opened = await http.post(f"/api/requests/{rid}/options", json=body)
    if opened.status_code != 200:
        return opened
    data = opened.json()
    return await http.post(f"/api/requests/{rid}/vote", json={
        "nonce": data["nonce"], "credential": passkey.assert_(challenge(data["options"]))})


async def test_a_passkey_vote_from_the_page_is_counted_by_the_guard(
        world: dict[str, Any]) -> None:
    call = deploy()
    rid = await held(world, call)
    async with client(world) as http:
        assert (await sign_in(http, "dave", world["passkeys"]["dave"])).status_code == 200
        page = await http.get(f"/requests/{rid}")
        assert page.status_code == 200 and "billing" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        answer = await vote(http, rid, world["passkeys"]["dave"])
        assert answer.json()["status"] == "approved", answer.text
    run = await world["guard"].authorize(call, wait=0)
    assert run.outcome == "approved" and run.approvers == ("dave",)


async def test_votes_need_a_session_and_a_forged_cookie_is_none(
        world: dict[str, Any]) -> None:
    rid = await held(world, deploy())
    async with client(world) as http:
        assert (await vote(http, rid, world["passkeys"]["dave"])).status_code == 401
        for forged in ("x.y", Sessions().issue("dave")):  # another server's secret
            http.cookies.set(COOKIE, forged)
            assert (await vote(http, rid, world["passkeys"]["dave"])).status_code == 401
            assert (await http.get("/")).status_code == 303


async def test_another_approvers_passkey_cannot_sign_in_as_dave(
        world: dict[str, Any]) -> None:
    async with client(world) as http:
        answer = await sign_in(http, "dave", world["passkeys"]["erin"])
        assert answer.status_code == 403 and COOKIE not in answer.cookies
        assert (await sign_in(http, "dave", SoftPasskey())).status_code == 403
    refused = [e for e in world["audit"].events if e["type"] == "web.signin_refused"]
    assert len(refused) == 2 and {e["approver"] for e in refused} == {"dave"}


async def test_a_vote_signed_by_another_passkey_than_the_session_is_refused(
        world: dict[str, Any]) -> None:
    """Signed in as dave, confirming with erin's passkey: the statement names dave."""
    rid = await held(world, deploy())
    async with client(world) as http:
        await sign_in(http, "dave", world["passkeys"]["dave"])
        answer = await vote(http, rid, world["passkeys"]["erin"])
        assert answer.status_code == 403 and "belongs to 'erin'" in answer.json()["error"]
    assert any(e["type"] == "vote.rejected" for e in world["audit"].events)


@pytest.mark.parametrize("body, status", [
    ({"grant_ttl": 7200}, 400),  # longer than max_grant: 1h
    ({"grant_ttl": float("nan")}, 400),
    ({"grant_ttl": True}, 400),
    ({"decision": "maybe"}, 400),
])
async def test_bad_vote_terms_are_refused_before_any_ceremony(
        world: dict[str, Any], body: dict[str, Any], status: int) -> None:
    rid = await held(world, deploy())
    async with client(world) as http:
        await sign_in(http, "dave", world["passkeys"]["dave"])
        if body.get("grant_ttl") != body.get("grant_ttl"):  # NaN is not JSON
            answer = await http.post(f"/api/requests/{rid}/options",
                                     content=b'{"decision":"approve","grant_ttl":NaN}',
                                     headers={"content-type": "application/json"})
            assert answer.status_code == 400, answer.text
            return
        answer = await vote(http, rid, world["passkeys"]["dave"], **body)
        assert answer.status_code == status, answer.text


async def test_an_enrolment_link_from_an_unlisted_key_is_refused(
        world: dict[str, Any], tmp_path: Path) -> None:
    from agentguard.trust.enrol import make_enrolment_token

    token = make_enrolment_token("dave", generate_key(tmp_path / "agent.key"))
    async with client(world) as http:
        answer = await http.post("/api/enroll/options", json={"token": token})
        assert answer.status_code == 403 and "not signed by" in answer.json()["error"]


async def test_a_call_rewritten_in_the_store_is_not_offered_for_a_vote(
        world: dict[str, Any], tmp_path: Path) -> None:
    """The agent rewrites the stored copy of its call (what the page shows) and keeps the
    hash (what the vote names): the page says so and offers no vote."""
    import json
    import sqlite3

    rid = await held(world, deploy("v1"))
    with sqlite3.connect(tmp_path / "s.db") as db:
        (doc,) = db.execute("SELECT doc FROM requests WHERE id = ?", (rid,)).fetchone()
        data = json.loads(doc)
        data["call"]["args"]["version"] = "v1-harmless-dry-run"
        db.execute("UPDATE requests SET doc = ? WHERE id = ?", (json.dumps(data), rid))
    async with client(world) as http:
        await sign_in(http, "dave", world["passkeys"]["dave"])
        page = await http.get(f"/requests/{rid}")
        assert "does not match its call hash" in page.text and 'id="vote-form"' not in page.text
        answer = await vote(http, rid, world["passkeys"]["dave"])
        assert answer.status_code == 409 and "call hash" in answer.json()["error"]


async def test_a_call_the_store_changed_after_the_page_showed_it_is_not_signed(
        world: dict[str, Any]) -> None:
    """The page signs the hash of the call it displayed: the agent rewrites the context an
    approver reads (not in the call hash) after dave opened the page; the vote is refused
    before any ceremony, and a vote made on the rewritten page does not count with the guard."""
    import sqlite3

    call = deploy()
    rid = await held(world, call)
    async with client(world) as http:
        await sign_in(http, "dave", world["passkeys"]["dave"])
        page = await http.get(f"/requests/{rid}")
        shown = re.search(r'data-shown="([0-9a-f]{64})"', page.text)
        assert shown is not None
        with sqlite3.connect(world["db"]) as conn:
            conn.execute("UPDATE requests SET doc = json_set(doc, '$.call.context.source_ip', "
                         "'10.0.0.1') WHERE id = ?", (rid,))
        stale = await vote(http, rid, world["passkeys"]["dave"], shown=shown.group(1))
        assert stale.status_code == 409 and "changed since" in stale.text
        fresh = await vote(http, rid, world["passkeys"]["dave"])  # reads the rewritten page
        assert fresh.status_code == 200, fresh.text
    run = await world["guard"].authorize(call, wait=0)
    assert run.outcome == "denied" and "shown another call" in run.reason
