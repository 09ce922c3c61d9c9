"""Clicks on the Slack message, delivered as real signed interactivity requests."""

from __future__ import annotations

import time

import anyio
import pytest

from agentguard.audit.memory import MemoryAuditLog
from agentguard.channels.slack.blocks import ACTION_APPROVE, ACTION_APPROVE_FOR, ACTION_DENY
from tests.channels.slack.fake_slack import CHANNEL, FakeSlack, all_text, buttons, http_post
from tests.channels.slack.harness import make_call, slack_harness

pytestmark = pytest.mark.anyio


def types_of(audit: MemoryAuditLog) -> list[str]:
    return [e["type"] for e in audit.events]


async def test_approve_click_runs_the_call_and_updates_the_message(
    fake_slack: FakeSlack,
) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        assert await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts) == 200
        auth = await p.result()
    assert auth.outcome == "approved" and auth.approvers == ("slack:UALICE",)
    post = fake_slack.calls_to("chat.postMessage")[0]
    assert post["params"]["channel"] == CHANNEL and post["token"].startswith("xoxb-")
    update = fake_slack.calls_to("chat.update")[-1]["params"]
    assert (update["channel"], update["ts"]) == (CHANNEL, p.ts)
    text = all_text(update["blocks"])
    assert "Approved by slack:UALICE at " in text and "<@UALICE>" in text
    assert not buttons({"params": update}), "a settled message keeps no buttons"
    assert "call.executed" in types_of(h.audit)


async def test_deny_click_refuses_the_call(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        assert await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts) == 200
        auth = await p.result()
    assert auth.outcome == "denied" and "slack:UBOB" in auth.reason
    text = all_text(fake_slack.calls_to("chat.update")[-1]["params"]["blocks"])
    assert "Denied by slack:UBOB" in text and "nothing ran" in text


async def test_approve_for_n_creates_a_grant_for_later_calls(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h:
        async with h.holding(make_call("restart", svc="db")) as p:
            value = buttons(p.post)[ACTION_APPROVE_FOR]
            assert value == f"{p.request_id}:900"
            assert await h.click("UALICE", ACTION_APPROVE_FOR, value, ts=p.ts) == 200
            auth = await p.result()
        assert auth.outcome == "approved"
        grants = await h.store.list_grants()
        assert [(g.granted_by, g.tool) for g in grants] == [("slack:UALICE", "restart")]
        assert 0 < grants[0].expires_at - time.time() <= 900
        again = await h.guard.authorize(make_call("restart", svc="cache"))
    assert again.outcome == "approved"
    assert len(fake_slack.calls_to("chat.postMessage")) == 1, "the grant covered the 2nd call"


async def test_approve_for_longer_than_the_rule_allows_is_refused(
    fake_slack: FakeSlack,
) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        forged = f"{p.request_id}:86400"
        assert await h.click("UALICE", ACTION_APPROVE_FOR, forged, ts=p.ts) == 200
        ephemeral = await fake_slack.wait("chat.postEphemeral")
        assert "at most 900s" in ephemeral[0]["params"]["text"]
        assert (await h.store.get_request(p.request_id)).status == "pending"
        await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
        assert (await p.result()).outcome == "approved"
    assert await h.store.list_grants() == []


async def test_buttons_offer_no_grant_where_the_rule_allows_none(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("iam.update", r="x")) as p:
        assert set(buttons(p.post)) == {ACTION_APPROVE, ACTION_DENY}
        await h.click("UBOB", ACTION_APPROVE, p.request_id, ts=p.ts)
        await p.result()


async def test_unauthorised_clicker_gets_an_ephemeral_and_the_call_stays_held(
    fake_slack: FakeSlack,
) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        assert await h.click("UEVE", ACTION_APPROVE, p.request_id, ts=p.ts) == 200
        (ephemeral,) = await fake_slack.wait("chat.postEphemeral")
        params = ephemeral["params"]
        assert (params["user"], params["channel"]) == ("UEVE", CHANNEL)
        assert params["text"].startswith("not authorised: ")
        assert "slack:UEVE" in params["text"] and "not an approver" in params["text"]
        request = await h.store.get_request(p.request_id)
        assert request.status == "pending" and request.votes == ()
        assert await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts) == 200
        auth = await p.result()
    assert auth.outcome == "approved" and auth.approvers == ("slack:UALICE",)
    rejected = [e for e in h.audit.events if e["type"] == "vote.rejected"]
    assert [e["approver"] for e in rejected] == ["slack:UEVE"]


async def test_display_name_in_the_payload_is_never_the_identity(fake_slack: FakeSlack) -> None:
    # The payload's username/name fields are attacker-chosen; only user.id counts.
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        await h.click("UEVE", ACTION_APPROVE, p.request_id, ts=p.ts)
        await fake_slack.wait("chat.postEphemeral")
        assert (await h.store.get_request(p.request_id)).status == "pending"
        await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts)
        assert (await p.result()).outcome == "denied"


async def test_requester_cannot_approve_its_own_call(fake_slack: FakeSlack) -> None:
    call = make_call("iam.update", acting_for="slack:UALICE", role="admin")
    async with slack_harness(fake_slack) as h, h.holding(call) as p:
        assert await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts) == 200
        (ephemeral,) = await fake_slack.wait("chat.postEphemeral")
        assert "separation of duties" in ephemeral["params"]["text"]
        assert (await h.store.get_request(p.request_id)).status == "pending"
        await h.click("UBOB", ACTION_APPROVE, p.request_id, ts=p.ts)
        auth = await p.result()
    assert auth.outcome == "approved" and auth.approvers == ("slack:UBOB",)


async def test_forged_signature_is_rejected_and_nothing_is_recorded(
    fake_slack: FakeSlack,
) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        status = await h.click("UALICE", ACTION_APPROVE, p.request_id, secret="not-the-secret")
        assert status == 401
        request = await h.store.get_request(p.request_id)
        assert request.status == "pending" and request.votes == ()
        await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts)
        await p.result()
    assert fake_slack.calls_to("chat.postEphemeral") == []


async def test_unsigned_and_stale_requests_are_rejected(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        stale = await h.click("UALICE", ACTION_APPROVE, p.request_id,
                              timestamp=time.time() - 6 * 60)
        future = await h.click("UALICE", ACTION_APPROVE, p.request_id,
                               timestamp=time.time() + 6 * 60)
        status, _ = await http_post(h.url, b"payload=%7B%7D", {})
        assert (stale, future, status) == (401, 401, 401)
        assert (await h.store.get_request(p.request_id)).votes == ()
        await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts)
        await p.result()


async def test_replayed_request_is_ignored_and_audited(fake_slack: FakeSlack) -> None:
    from tests.channels.slack.fake_slack import block_actions, signed

    async with slack_harness(fake_slack) as h, h.holding(make_call("drop_table", t="x")) as p:
        body, headers = signed(block_actions("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts))
        first, _ = await http_post(h.url, body, headers)
        replay, _ = await http_post(h.url, body, headers)
        assert (first, replay) == (200, 200)
        request = await h.store.get_request(p.request_id)
        assert request.status == "pending" and len(request.votes) == 1
        # Had the replay reached the store, Alice would have been told she already voted.
        await anyio.sleep(0.2)
        assert fake_slack.calls_to("chat.postEphemeral") == []
        replays = [e for e in h.audit.events if e["type"] == "vote.rejected"]
        assert [(e["approver"], e["request_id"]) for e in replays] == [
            ("slack:UALICE", p.request_id)]
        assert "replayed" in replays[0]["detail"]
        await h.click("UBOB", ACTION_APPROVE, p.request_id, ts=p.ts)
        auth = await p.result()
    assert auth.outcome == "approved" and set(auth.approvers) == {"slack:UALICE", "slack:UBOB"}


async def test_quorum_progress_is_shown_in_place(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("drop_table", t="x")) as p:
        await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
        (update,) = await fake_slack.wait("chat.update")
        assert update["params"]["ts"] == p.ts
        assert "votes so far: slack:UALICE approved" in all_text(update["params"]["blocks"])
        assert buttons(update), "still pending: the buttons stay"
        await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts)
        assert (await p.result()).outcome == "denied"


async def test_click_after_the_request_settled_is_refused_privately(
    fake_slack: FakeSlack,
) -> None:
    async with slack_harness(fake_slack) as h:
        async with h.holding(make_call("restart", svc="db")) as p:
            await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
            assert (await p.result()).outcome == "approved"
        assert await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts) == 200
        (ephemeral,) = await fake_slack.wait("chat.postEphemeral")
    assert "no longer pending" in ephemeral["params"]["text"]
    assert ephemeral["params"]["user"] == "UBOB"


async def test_expiry_updates_the_message(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("quick", x=1)) as p:
        auth = await p.result()
    assert auth.outcome == "expired"
    update = fake_slack.calls_to("chat.update")[-1]["params"]
    assert update["ts"] == p.ts
    assert "Expired at " in all_text(update["blocks"]) and not buttons({"params": update})


@pytest.mark.parametrize(("body", "expected"), [
    (b"payload=not-json", 400), (b"nothing=here", 400), (b"payload=1&payload=2", 400),
    (b"\xff\xfe", 401)])
async def test_malformed_signed_bodies_are_rejected(
    fake_slack: FakeSlack, body: bytes, expected: int,
) -> None:
    import hashlib
    import hmac

    from tests.channels.slack.fake_slack import SIGNING_SECRET

    async with slack_harness(fake_slack) as h:
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body,
                               hashlib.sha256).hexdigest()
        status, _ = await http_post(h.url, body, {"X-Slack-Request-Timestamp": ts,
                                                  "X-Slack-Signature": sig})
    assert status == expected


async def test_clicks_on_foreign_buttons_are_ignored(fake_slack: FakeSlack) -> None:
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        assert await h.click("UALICE", "some_other_app_button", p.request_id) == 200
        assert await h.click("UALICE", ACTION_APPROVE, "../../etc/passwd") == 200
        assert (await h.store.get_request(p.request_id)).votes == ()
        await h.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts)
        await p.result()


async def test_clicks_from_another_workspace_are_ignored(fake_slack: FakeSlack) -> None:
    from agentguard.channels.slack import SlackInteractions
    from tests.channels.slack.fake_slack import block_actions
    from tests.channels.slack.harness import settings_for

    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        pinned = SlackInteractions.from_settings(settings_for(fake_slack, team_id="T0TEAM"),
                                                 store=h.store, audit=h.audit)
        foreign = block_actions("UALICE", ACTION_APPROVE, p.request_id, team="T0EVIL")
        assert await pinned.decide(foreign) == []
        assert (await h.store.get_request(p.request_id)).votes == ()
        (outcome,) = await pinned.decide(
            block_actions("UALICE", ACTION_APPROVE, p.request_id, team="T0TEAM"))
        assert outcome.problem is None and outcome.click.approver == "slack:UALICE"
        assert (await p.result()).outcome == "approved"
