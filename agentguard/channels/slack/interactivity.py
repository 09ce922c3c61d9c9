"""Slack button clicks become votes: the HTTP interactivity endpoint and its shared core.

A click reaches us either as a signed HTTP POST (``agentguard serve --slack``, or these routes
mounted in another server) or over Socket Mode (:mod:`.socket_mode`). Either way the payload
is authenticated first (HMAC v0 signature within 5 minutes and never seen before; or the
app-level token that opened the websocket), then :meth:`SlackInteractions.decide` turns the
click into a vote on the shared store with :func:`~agentguard.approvals.cast_vote`, as the
Slack user ``slack:<user id>`` (never a display name). A refused vote (not an approver,
separation of duties, already settled) leaves the request pending and tells the clicker
privately (``chat.postEphemeral``); a counted vote updates the message in place.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk import WebClient
from slack_sdk.signature import Clock, SignatureVerifier

from agentguard.approvals import cast_vote, request_event
from agentguard.audit.base import AuditSink
from agentguard.channels.slack.blocks import (
    ACTION_APPROVE,
    ACTION_APPROVE_FOR,
    ACTION_DENY,
    fallback_text,
    mrkdwn_escape,
    outcome_blocks,
    parse_action_value,
    request_blocks,
)
from agentguard.channels.slack.config import SlackSettings
from agentguard.channels.webhook import WINDOW, ReplayCache, read_body
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest

__all__ = ["Click", "ClickOutcome", "SlackInteractions"]

log = logging.getLogger("agentguard.channels.slack")

MAX_BODY = 64 * 1024
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_OUR_ACTIONS = frozenset({ACTION_APPROVE, ACTION_APPROVE_FOR, ACTION_DENY})


# --------------------------------------------------------------------------- payload model


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Id(_Loose):
    id: str


class _Action(_Loose):
    action_id: str
    value: str = ""


class _Container(_Loose):
    channel_id: str | None = None
    message_ts: str | None = None


class _Message(_Loose):
    ts: str | None = None


class _BlockActions(_Loose):
    type: Literal["block_actions"]
    user: _Id
    actions: list[_Action] = Field(max_length=5)
    team: _Id | None = None
    channel: _Id | None = None
    container: _Container | None = None
    message: _Message | None = None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Click:
    """One authenticated click on one of our buttons.

    Attributes:
        user_id: Slack user id of the clicker.
        request_id: The approval request the button belongs to.
        approve: Approve (True) or deny.
        grant_ttl: Seconds of "approve for N" (0: this call only).
        channel_id: Conversation of the message (for the reply and the update).
        message_ts: Timestamp of the message (to update it in place).
    """

    user_id: str
    request_id: str
    approve: bool
    grant_ttl: float
    channel_id: str | None
    message_ts: str | None

    @property
    def approver(self) -> str:
        """The verified identity: ``slack:<user id>``."""
        return f"slack:{self.user_id}"


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    """What a click did: the request afterwards, or why the vote was refused."""

    click: Click
    request: ApprovalRequest | None
    problem: str | None


class _Clock(Clock):
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


# --------------------------------------------------------------------------- the core


class SlackInteractions:
    """Authenticates Slack interactivity and turns clicks into votes on the store.

    Args:
        store: The store the guard uses (shared with the guard's process).
        audit: Audit sink; refused votes and replays are recorded there.
        client: Web API client with the bot token (ephemeral replies, message updates).
        signing_secret: The app's signing secret; required for the HTTP endpoint.
        team_id: When set, clicks from other workspaces are ignored.
        clock: Unix time source.
        replay_cache: Deliveries already accepted (shared with Socket Mode envelopes).
        channel: Channel name recorded with votes.
    """

    def __init__(
        self, *, store: Store, audit: AuditSink, client: WebClient,
        signing_secret: str | None = None, team_id: str | None = None,
        clock: Callable[[], float] = time.time, replay_cache: ReplayCache | None = None,
        channel: str = "slack",
    ) -> None:
        self.store = store
        self.audit = audit
        self.client = client
        self.team_id = team_id
        self.clock = clock
        self.replay_cache = replay_cache or ReplayCache()
        self.channel = channel
        self._verifier = (SignatureVerifier(signing_secret, clock=_Clock(clock))
                          if signing_secret else None)

    @classmethod
    def from_settings(
        cls, settings: SlackSettings, *, store: Store, audit: AuditSink,
        clock: Callable[[], float] = time.time,
    ) -> SlackInteractions:
        """Build from settings (bot token required; signing secret for HTTP)."""
        settings.require("bot_token")
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
        return cls(store=store, audit=audit, client=settings.web_client(),
                   signing_secret=secret, team_id=settings.team_id, clock=clock)

    # ------------------------------------------------------------------ clicks -> votes

    def parse(self, payload: Mapping[str, Any]) -> list[Click]:
        """The clicks on our buttons in an authenticated payload (others are ignored)."""
        if not isinstance(payload, Mapping) or payload.get("type") != "block_actions":
            return []
        try:
            actions = _BlockActions.model_validate(payload)
        except ValidationError as exc:
            log.warning("ignored a malformed Slack block_actions payload (%d errors)",
                        exc.error_count())
            return []
        if self.team_id and (actions.team is None or actions.team.id != self.team_id):
            log.warning("ignored a click from another Slack workspace")
            return []
        if not _USER_ID.match(actions.user.id):
            log.warning("ignored a click with a malformed Slack user id")
            return []
        container = actions.container or _Container()
        channel_id = container.channel_id or (actions.channel.id if actions.channel else None)
        message_ts = container.message_ts or (actions.message.ts if actions.message else None)
        clicks = []
        for action in actions.actions:
            if action.action_id not in _OUR_ACTIONS:
                continue
            parsed = parse_action_value(action.action_id, action.value)
            if parsed is None:
                log.warning("ignored a click with a malformed button value")
                continue
            clicks.append(Click(
                user_id=actions.user.id, request_id=parsed[0],
                approve=action.action_id != ACTION_DENY, grant_ttl=parsed[1],
                channel_id=channel_id, message_ts=message_ts))
        return clicks

    async def decide(self, payload: Mapping[str, Any]) -> list[ClickOutcome]:
        """Record the votes of an authenticated payload; return what each click did."""
        outcomes = []
        for click in self.parse(payload):
            request, problem = await cast_vote(
                store=self.store, audit=self.audit, request_id=click.request_id,
                approver=click.approver, approve=click.approve, channel=self.channel,
                reason="" if click.approve else "denied in Slack", grant_ttl=click.grant_ttl,
                now=self.clock())
            if problem is not None:
                log.info("Slack vote by %s on %s refused: %s", click.approver,
                         click.request_id, problem)
            outcomes.append(ClickOutcome(click, request, problem))
        return outcomes

    async def reply(self, outcomes: Sequence[ClickOutcome]) -> None:
        """Tell refused clickers why (ephemeral); update the message after counted votes.

        Slack API failures are logged, never raised: the vote is already recorded.
        """
        for outcome in outcomes:
            click = outcome.click
            try:
                if outcome.problem is not None:
                    if click.channel_id:
                        await self._call(
                            self.client.chat_postEphemeral, channel=click.channel_id,
                            user=click.user_id,
                            text=f"not authorised: {mrkdwn_escape(outcome.problem)}")
                elif outcome.request is not None and click.channel_id and click.message_ts:
                    request, now = outcome.request, self.clock()
                    blocks = (request_blocks(request, now=now) if request.status == "pending"
                              else outcome_blocks(request, now=now))
                    await self._call(self.client.chat_update, channel=click.channel_id,
                                     ts=click.message_ts, text=fallback_text(request),
                                     blocks=blocks)
            except Exception as exc:
                log.warning("Slack reply for request %s failed: %s: %s", click.request_id,
                            type(exc).__name__, exc)

    async def process(self, payload: Mapping[str, Any]) -> list[ClickOutcome]:
        """:meth:`decide`, then :meth:`reply` (Socket Mode, after the envelope is acked)."""
        outcomes = await self.decide(payload)
        await self.reply(outcomes)
        return outcomes

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(method, **kwargs), abandon_on_cancel=True)

    # ------------------------------------------------------------------ HTTP

    def _check(self, body: bytes, timestamp: str | None, signature: str | None) -> str | None:
        assert self._verifier is not None
        if not timestamp or not signature or not timestamp.isdigit() or len(timestamp) > 12:
            return "missing or malformed signature headers"
        if abs(self.clock() - int(timestamp)) > WINDOW:
            return "stale timestamp (outside the 5-minute window)"
        try:
            valid = self._verifier.is_valid(body, timestamp, signature)
        except UnicodeDecodeError:  # the verifier decodes the body; Slack sends UTF-8
            return "body is not UTF-8"
        if not valid:
            return "bad signature"
        return None

    async def handle_http(
        self, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, list[ClickOutcome]]:
        """Verify and process one interactivity request; return (HTTP status, outcomes).

        401 for a missing, forged or stale signature; 400 for a malformed body; 200 (and no
        outcomes) for a replayed request, which is logged and audited. Call :meth:`reply`
        with the outcomes after answering: Slack wants its answer within 3 seconds.
        """
        if self._verifier is None:
            log.error("Slack interactivity request refused: no signing secret is configured")
            return 503, []
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("x-slack-request-timestamp")
        signature = lower.get("x-slack-signature")
        problem = self._check(body, timestamp, signature)
        if problem is not None:
            log.warning("rejected a Slack interactivity request: %s", problem)
            return 401, []
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=20)
            if "ssl_check" in form:
                return 200, []
            (raw,) = form["payload"]
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError, KeyError):
            log.warning("rejected a Slack interactivity request: malformed body")
            return 400, []
        if not self.replay_cache.claim(f"slack:{timestamp}:{signature}", now=self.clock()):
            await self._audit_replay(payload)
            return 200, []
        return 200, await self.decide(payload)

    async def _audit_replay(self, payload: Any) -> None:
        clicks = self.parse(payload) if isinstance(payload, Mapping) else []
        log.warning("ignored a replayed Slack interactivity request (%s)", ", ".join(
            f"{c.approver} on {c.request_id}" for c in clicks) or "no recognised click")
        for click in clicks or [None]:
            request = await self.store.get_request(click.request_id) if click else None
            event = (request_event(request, "vote.rejected") if request is not None
                     else {"type": "vote.rejected",
                           "request_id": click.request_id if click else None})
            event.update(approver=click.approver if click else None, channel=self.channel,
                         detail="replayed Slack interactivity request ignored")
            try:
                self.audit.append(event)
            except Exception:
                log.exception("could not audit a replayed Slack request")

    def routes(self, path: str = "/slack/interactions") -> list[Any]:
        """Starlette routes to mount in a server (``agentguard serve``, the HTTP proxy)."""
        from starlette.background import BackgroundTask
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def endpoint(request: Request) -> Response:
            body = await read_body(request, MAX_BODY)
            if body is None:
                return Response(status_code=413)
            status, outcomes = await self.handle_http(body, request.headers)
            task = BackgroundTask(self.reply, outcomes) if outcomes else None
            return Response(status_code=status, background=task)

        return [Route(path, endpoint, methods=["POST"])]

    def app(self, path: str = "/slack/interactions") -> Any:
        """A Starlette app serving only the interactivity endpoint."""
        from starlette.applications import Starlette

        return Starlette(routes=self.routes(path))
