"""The Slack channel when Slack fails: unreachable, or the fallback channel answers."""

from __future__ import annotations

import socket

import pytest

from agentguard.channels.fallback import Fallback
from agentguard.channels.scripted import ScriptedChannel
from agentguard.channels.slack import SlackChannel
from agentguard.channels.slack.blocks import ACTION_APPROVE
from agentguard.errors import ConfigError
from tests.channels.slack.fake_slack import BOT_TOKEN, FakeSlack, all_text
from tests.channels.slack.harness import make_call, settings_for, slack_harness

pytestmark = pytest.mark.anyio


def closed_port_url() -> str:
    """A loopback URL nobody listens on: Slack is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


async def test_slack_down_is_unreachable_and_the_call_is_refused(fake_slack: FakeSlack) -> None:
    down = SlackChannel(settings_for(fake_slack, api_url=closed_port_url(), timeout=2))
    async with slack_harness(fake_slack, channels=[down]) as h:
        auth = await h.guard.authorize(make_call("restart", svc="db"))
    assert auth.outcome == "unreachable"
    assert not auth.allowed
    (event,) = [e for e in h.audit.events if e["type"] == "challenge.unreachable"]
    assert "slack: Slack API unreachable" in event["detail"]


@pytest.mark.parametrize("error", ["channel_not_found", "http_503", "invalid_blocks_please"])
async def test_slack_api_errors_are_unreachable(fake_slack: FakeSlack, error: str) -> None:
    fake_slack.fail["chat.postMessage"] = error
    async with slack_harness(fake_slack) as h:
        auth = await h.guard.authorize(make_call("restart", svc="db"))
    assert auth.outcome == "unreachable"
    detail = next(e for e in h.audit.events if e["type"] == "challenge.unreachable")["detail"]
    assert "Slack API error" in detail and BOT_TOKEN not in detail


async def test_wrong_token_is_unreachable_not_a_crash(fake_slack: FakeSlack) -> None:
    bad = SlackChannel(settings_for(fake_slack, bot_token="xoxb-revoked"))
    async with slack_harness(fake_slack, channels=[bad]) as h:
        auth = await h.guard.authorize(make_call("restart", svc="db"))
    assert auth.outcome == "unreachable"
    assert "invalid_auth" in next(
        e for e in h.audit.events if e["type"] == "challenge.unreachable")["detail"]


async def test_fallback_answers_when_slack_is_down(fake_slack: FakeSlack) -> None:
    down = SlackChannel(settings_for(fake_slack, api_url=closed_port_url(), timeout=2))
    console = ScriptedChannel([ScriptedChannel.vote("slack:UBOB")], name="console")
    async with slack_harness(fake_slack, channels=[Fallback(down, console)]) as h:
        auth = await h.guard.authorize(make_call("restart", svc="db"))
    assert auth.outcome == "approved" and auth.approvers == ("slack:UBOB",)
    assert [r.status for r in console.settled_requests] == ["approved"]


async def test_fallback_is_not_asked_while_slack_works(fake_slack: FakeSlack) -> None:
    console = ScriptedChannel([ScriptedChannel.vote("slack:UBOB", False)], name="console")
    slack = SlackChannel(settings_for(fake_slack))
    async with slack_harness(fake_slack, channels=[Fallback(slack, console)]) as h, \
            h.holding(make_call("restart", svc="db")) as p:
        await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
        auth = await p.result()
    assert auth.outcome == "approved" and auth.approvers == ("slack:UALICE",)
    assert console.settled_requests == []


async def test_failed_update_does_not_change_the_outcome(fake_slack: FakeSlack) -> None:
    fake_slack.fail["chat.update"] = "message_not_found"
    async with slack_harness(fake_slack) as h, h.holding(make_call("restart", svc="db")) as p:
        await h.click("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
        auth = await p.result()
    assert auth.outcome == "approved"


async def test_posted_message_passes_slacks_block_checks_with_hostile_arguments(
    fake_slack: FakeSlack,
) -> None:
    call = make_call("restart", svc="<!channel>", link="<https://evil|ok>", fence="```x```",
                     big="Z" * 5000)
    async with slack_harness(fake_slack) as h, h.holding(call) as p:
        text = all_text(p.post["params"]["blocks"])
        assert "<!channel>" not in text and "<https://evil|ok>" not in text
        assert "full call hash" in text and "Z" * 5000 not in text
        assert "&lt;!channel&gt;" not in p.post["params"]["text"]  # the tool name is benign
        await h.deny("UBOB", p)
        await p.result()


def test_channel_needs_a_conversation_and_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOT_TOKEN", "CHANNEL", "CONFIG", "SIGNING_SECRET", "APP_TOKEN"):
        monkeypatch.delenv(f"AGENTGUARD_SLACK_{name}", raising=False)
    with pytest.raises(ConfigError, match="AGENTGUARD_SLACK_CHANNEL"):
        SlackChannel()
    monkeypatch.setenv("AGENTGUARD_SLACK_CHANNEL", "C1")
    with pytest.raises(ConfigError, match="AGENTGUARD_SLACK_BOT_TOKEN"):
        SlackChannel()
    monkeypatch.setenv("AGENTGUARD_SLACK_BOT_TOKEN", "xoxb-1")
    assert SlackChannel().channel == "C1"
