"""A guard posting to the fake Slack, with the interactivity endpoint served in this loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentguard import Guard, Policy
from agentguard.audit.memory import MemoryAuditLog
from agentguard.channels.base import ApprovalChannel
from agentguard.channels.slack import SlackChannel, SlackInteractions, SlackSettings
from agentguard.channels.slack.blocks import ACTION_DENY
from agentguard.store import MemoryStore
from agentguard.store.base import Store
from agentguard.types import Authorization, CallContext, Principal, ToolCall
from tests.channels.slack.fake_slack import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    FakeSlack,
    buttons,
    http_post,
    serving,
    signed,
)

POLICY = """
defaults: {timeout: 30s, deny_cooldown: 1s}
groups: {oncall: ["slack:UALICE", "slack:UBOB"]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall], max_grant: 15m}
  privileged: {require: approve, approvers: [group:oncall], separation_of_duties: true}
rules:
  - {id: restart, match: {tool: restart}, class: destructive}
  - {id: iam, match: {tool: iam.update}, class: privileged, labels: [policy]}
  - {id: two-person, match: {tool: drop_table}, class: destructive, quorum: 2}
  - {id: quick, match: {tool: quick}, class: destructive, timeout: 1s}
"""

AGENT = Principal("agent:support-bot", "agent")


def choice(value: str, reason: str | None = None) -> dict[str, Any]:
    """The state of the review modal's inputs: the decision picked, the reason typed."""
    return {"agentguard_choice": {"choice": {"type": "radio_buttons", "selected_option": {
        "text": {"type": "plain_text", "text": value}, "value": value}}}, **because(reason)}


def because(reason: str | None) -> dict[str, Any]:
    """The state of a modal's reason input (``None``: left empty, as Slack sends it)."""
    return {"agentguard_reason": {"reason": {"type": "plain_text_input", "value": reason}}}


def make_call(tool: str, acting_for: str | None = None, **args: Any) -> ToolCall:
    return ToolCall(tool=tool, args=args, principal=AGENT,
                    context=CallContext(acting_for=acting_for))


def settings_for(fake: FakeSlack, **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = dict(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET,
                                  channel=CHANNEL, api_url=fake.base_url)
    values.update(overrides)
    return SlackSettings(**values)


@dataclass
class Pending:
    """A call the guard is holding; its Slack message was posted."""

    post: dict[str, Any]
    _box: dict[str, Authorization] = field(default_factory=dict)
    _done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def request_id(self) -> str:
        return buttons(self.post)[ACTION_DENY]  # every pending message can deny

    @property
    def ts(self) -> str:
        return self.post["response"]["ts"]

    async def result(self, timeout: float = 20.0) -> Authorization:
        with anyio.fail_after(timeout):
            await self._done.wait()
        return self._box["auth"]


@dataclass
class Harness:
    fake: FakeSlack
    store: Store
    audit: MemoryAuditLog
    guard: Guard
    interactions: SlackInteractions
    url: str

    async def click(self, user: str, action: str, value: str, *, ts: str = "1.0",
                    **kw: Any) -> int:
        """A signed click, POSTed to the interactivity endpoint; return the HTTP status."""
        return await self.post(self.fake.click(user, action, value, ts=ts), **kw)

    async def post(self, payload: dict[str, Any], **kw: Any) -> int:
        """Sign ``payload`` like Slack and POST it to the endpoint; return the HTTP status."""
        body, headers = signed(payload, **kw)
        status, _ = await http_post(self.url, body, headers)
        return status

    async def open_modal(self, user: str, action: str, value: str, *, ts: str = "1.0"
                         ) -> dict[str, Any]:
        """Click a button that opens a modal; return the view Slack opened."""
        before = len(self.fake.calls_to("views.open"))
        assert await self.click(user, action, value, ts=ts) == 200
        await self.fake.wait("views.open", before + 1)
        return self.fake.opened()

    async def submit(self, user: str, view: dict[str, Any],
                     values: dict[str, Any] | None = None) -> int:
        """Submit ``view`` (one Slack opened) as ``user`` with ``values``; HTTP status."""
        return await self.post(self.fake.submit(user, view, values))

    async def deny(self, user: str, pending: Pending, reason: str | None = None) -> None:
        """Deny… in the message, then the reason modal submitted."""
        view = await self.open_modal(user, ACTION_DENY, pending.request_id, ts=pending.ts)
        assert await self.submit(user, view, because(reason)) == 200

    @asynccontextmanager
    async def holding(self, call: ToolCall) -> AsyncIterator[Pending]:
        """Run ``guard.authorize(call)`` in the background while the block runs."""
        before = len(self.fake.calls_to("chat.postMessage"))
        pending: Pending | None = None
        async with anyio.create_task_group() as tg:
            box: dict[str, Authorization] = {}
            done = anyio.Event()

            async def run() -> None:
                box["auth"] = await self.guard.authorize(call)
                done.set()

            tg.start_soon(run)
            posts = await self.fake.wait("chat.postMessage", before + 1)
            pending = Pending(posts[before], box, done)
            yield pending


@asynccontextmanager
async def slack_harness(
    fake: FakeSlack, *, store: Store | None = None,
    channels: Sequence[ApprovalChannel] | None = None,
) -> AsyncIterator[Harness]:
    settings = settings_for(fake)
    store = store if store is not None else MemoryStore()
    audit = MemoryAuditLog()
    guard = Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                  channels=list(channels) if channels is not None else [SlackChannel(settings)])
    interactions = SlackInteractions.from_settings(settings, store=store, audit=audit)
    async with guard, serving(interactions.app()) as base:
        yield Harness(fake, store, audit, guard, interactions, base + "/slack/interactions")
