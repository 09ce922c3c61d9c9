"""Clicks over Socket Mode: the app token opens a local websocket that delivers envelopes."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from agentguard.channels.slack import SlackInteractions, SlackSocketMode
from agentguard.channels.slack.blocks import ACTION_APPROVE, ACTION_DENY
from agentguard.errors import ConfigError
from tests.channels.slack.fake_slack import (
    APP_TOKEN,
    FakeSlack,
    FakeSocketMode,
    block_actions,
)
from tests.channels.slack.harness import because, make_call, settings_for, slack_harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def socket_server(fake_slack: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        fake_slack.ws_url = server.url
        yield server


async def test_click_over_socket_mode_is_acked_and_approves(
    fake_slack: FakeSlack, socket_server: FakeSocketMode,
) -> None:
    settings = settings_for(fake_slack, app_token=APP_TOKEN, signing_secret=None)
    async with slack_harness(fake_slack) as h:
        interactions = SlackInteractions.from_settings(settings, store=h.store, audit=h.audit)
        async with SlackSocketMode.from_settings(settings, interactions) as listener, \
                h.holding(make_call("restart", svc="db")) as p:
            assert listener.connected
            (opened,) = fake_slack.calls_to("apps.connections.open")
            assert opened["token"] == APP_TOKEN
            envelope = socket_server.send_interactive(
                block_actions("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts))
            assert await socket_server.wait_ack(envelope) == {"envelope_id": envelope}
            auth = await p.result()
    assert auth.outcome == "approved" and auth.approvers == ("slack:UALICE",)
    assert not listener.connected


async def test_socket_mode_refusals_and_redeliveries(
    fake_slack: FakeSlack, socket_server: FakeSocketMode,
) -> None:
    settings = settings_for(fake_slack, app_token=APP_TOKEN)
    async with slack_harness(fake_slack) as h:
        interactions = SlackInteractions.from_settings(settings, store=h.store, audit=h.audit)
        async with SlackSocketMode.from_settings(settings, interactions), \
                h.holding(make_call("drop_table", t="x")) as p:
            eve = socket_server.send_interactive(
                block_actions("UEVE", ACTION_APPROVE, p.request_id, ts=p.ts))
            await socket_server.wait_ack(eve)
            (ephemeral,) = await fake_slack.wait("chat.postEphemeral")
            assert ephemeral["params"]["user"] == "UEVE"
            assert ephemeral["params"]["text"].startswith("not recorded: ")
            # Slack re-delivers an envelope it believes was lost: processed once only.
            alice = block_actions("UALICE", ACTION_APPROVE, p.request_id, ts=p.ts)
            first = socket_server.send_interactive(alice)
            await socket_server.wait_ack(first)
            socket_server._outbox.put(__import__("json").dumps({
                "envelope_id": first, "type": "interactive", "payload": alice,
                "retry_attempt": 1, "retry_reason": "timeout"}))
            await anyio.sleep(0.3)
            request = await h.store.get_request(p.request_id)
            assert request.status == "pending" and len(request.votes) == 1
            assert len(fake_slack.calls_to("chat.postEphemeral")) == 1
            deny = socket_server.send_interactive(
                fake_slack.click("UBOB", ACTION_DENY, p.request_id, ts=p.ts))
            await socket_server.wait_ack(deny)
            (opened,) = await fake_slack.wait("views.open")
            submitted = socket_server.send_interactive(fake_slack.submit(
                "UBOB", opened["response"]["view"], because("not over a websocket")))
            assert await socket_server.wait_ack(submitted) == {"envelope_id": submitted}
            auth = await p.result()
    assert auth.outcome == "denied" and auth.reason.endswith("not over a websocket")


async def test_socket_mode_fails_closed_without_a_connection(fake_slack: FakeSlack) -> None:
    fake_slack.fail["apps.connections.open"] = "invalid_auth"
    settings = settings_for(fake_slack, app_token=APP_TOKEN)
    async with slack_harness(fake_slack) as h:
        interactions = SlackInteractions.from_settings(settings, store=h.store, audit=h.audit)
        with pytest.raises(ConfigError, match="Socket Mode could not connect"):
            async with SlackSocketMode.from_settings(settings, interactions):
                pass
    with pytest.raises(ConfigError, match="xapp-"):
        SlackSocketMode(interactions, app_token="xoxb-wrong-kind")
