"""Slack clicks and modal submissions become votes: the HTTP endpoint and its shared core.

An interaction reaches us either as a signed HTTP POST (``agentguard serve --slack``, or
these routes mounted in another server) or over Socket Mode (:mod:`.socket_mode`). Either
way it is authenticated first (HMAC v0 signature within 5 minutes and never seen before; or
the app-level token that opened the websocket), then :meth:`SlackInteractions.decide` acts
on it as the Slack user ``slack:<user id>`` (never a display name):

- **Approve** in a message votes with :func:`~agentguard.approvals.cast_vote` — only when the
  message showed the whole call (:func:`~.blocks.approval_route`, recomputed here from the
  stored request, so a stale or forged button approves nothing);
- **View all arguments**, **Approve for N…** and **Deny…** open a modal (:mod:`.modals`) with
  the click's ``trigger_id``: the whole call and the decision, the grant to confirm, the
  reason to give. Their votes come only from the modal's ``view_submission``, checked
  against the stored request (same call hash; approving from the review modal only when it
  held the whole call).

A refused vote leaves the request pending, is audited as ``vote.rejected`` and tells the
clicker privately (``chat.postEphemeral``). A counted vote that leaves the request pending
updates the message (votes so far); the final update is the guard's
(:meth:`~.channel.SlackChannel.settled`), so each decision updates the message once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from slack_sdk import WebClient
from slack_sdk.signature import Clock, SignatureVerifier

from agentguard.approvals import approver_problem, cast_vote, request_event
from agentguard.audit.base import AuditSink
from agentguard.channels.render import REASON_LIMIT, denial_reason
from agentguard.channels.slack.blocks import (
    Route,
    approval_route,
    fallback_text,
    mrkdwn_escape,
    request_blocks,
    route_note,
)
from agentguard.channels.slack.config import SlackSettings
from agentguard.channels.slack.modals import (
    CHOICE_APPROVE_FOR,
    Form,
    ModalMetadata,
    deny_view,
    grant_view,
    review_view,
)
from agentguard.channels.slack.payloads import Click, Submission, parse_interaction
from agentguard.channels.webhook import WINDOW, ReplayCache, read_body
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["ClickOutcome", "SlackInteractions"]

log = logging.getLogger("agentguard.channels.slack")

# A view_submission carries the whole modal back: up to 100 blocks of 3000 characters,
# JSON-escaped and then form-encoded (each up to 3 bytes per character).
MAX_BODY = 4 * 1024 * 1024
_FORM_OF = {"approve_for": "grant", "deny": "deny", "view": "review"}


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    """What one click or submission did.

    Attributes:
        click: The click or the modal submission.
        request: The request afterwards (None if there is no such request).
        problem: Why nothing was recorded (told to the clicker privately), or None.
        view: A modal to open with the click's ``trigger_id`` (no vote was cast).
    """

    click: Click | Submission
    request: ApprovalRequest | None
    problem: str | None = None
    view: dict[str, Any] | None = None

    @property
    def voted(self) -> bool:
        """Whether a vote was counted."""
        return self.problem is None and self.view is None


def _no_approval_here(request: ApprovalRequest, route: Route) -> str:
    """Why an approval through the message (or a modal that is not the review) is refused."""
    return route_note(request, route) or "approve from the message itself"


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
        channel: str = "slack", key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.client = client
        # serve's own key: it vouches, by signing, for the Slack user whose click it verified
        # (rules with assurance: signed count only such votes; the agent never holds the key).
        self.key = key
        self.team_id = team_id
        self.clock = clock
        self.replay_cache = replay_cache or ReplayCache()
        self.channel = channel
        self._verifier = (SignatureVerifier(signing_secret, clock=_Clock(clock))
                          if signing_secret else None)

    @classmethod
    def from_settings(
        cls, settings: SlackSettings, *, store: Store, audit: AuditSink,
        clock: Callable[[], float] = time.time, key: Ed25519PrivateKey | None = None,
    ) -> SlackInteractions:
        """Build from settings (bot token required; signing secret for HTTP)."""
        settings.require("bot_token")
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
        return cls(store=store, audit=audit, client=settings.web_client(),
                   signing_secret=secret, team_id=settings.team_id, clock=clock, key=key)

    # ------------------------------------------------------------------ interactions

    def parse(self, payload: Mapping[str, Any]) -> list[Click | Submission]:
        """Our clicks and submissions in an authenticated payload (others are ignored)."""
        return parse_interaction(payload, team_id=self.team_id)

    async def decide(self, payload: Mapping[str, Any]) -> list[ClickOutcome]:
        """Act on an authenticated payload: count votes, or prepare the modal to open."""
        outcomes = []
        for item in self.parse(payload):
            if isinstance(item, Submission):
                outcome = await self._submitted(item)
            else:
                outcome = await self._clicked(item)
            if outcome.problem is not None:
                log.info("Slack interaction by %s on %s refused: %s", item.approver,
                         item.request_id, outcome.problem)
            outcomes.append(outcome)
        return outcomes

    async def _clicked(self, click: Click) -> ClickOutcome:
        request = await self.store.get_request(click.request_id)
        if request is None:
            return ClickOutcome(click, None, f"no approval request {click.request_id!r}")
        route = approval_route(request)
        if click.action in ("approve", "approve_for") and route != "message":
            # Only a stale or crafted button gets here: the message offered no approval.
            return self._refuse(click, request, _no_approval_here(request, route))
        if click.action == "approve":
            return await self._vote(click, approve=True)
        if request.status != "pending":
            return ClickOutcome(click, request,
                                f"request is no longer pending ({request.status})")
        # Only approvers get a form to fill (cast_vote checks again when it is submitted).
        problem = approver_problem(request, click.approver)
        if problem is None and click.action == "approve_for" \
                and request.approval.max_grant < 1:
            problem = "this rule allows single-use approval only"
        elif problem is None and click.action == "view" and route == "elsewhere":
            problem = route_note(request, route)
        elif problem is None and not click.trigger_id:
            problem = "Slack sent no trigger to open a dialog with"
        if problem is not None:
            return ClickOutcome(click, request, problem)
        form: Form = _FORM_OF[click.action]  # type: ignore[assignment]
        metadata = ModalMetadata(f=form, r=request.id, h=request.call_hash,
                                 c=click.channel_id, m=click.message_ts)
        if form == "review":
            view = review_view(request, metadata, now=self.clock())
        elif form == "grant":
            view = grant_view(request, metadata)
        else:
            view = deny_view(request, metadata)
        return ClickOutcome(click, request, view=view)

    async def _submitted(self, sub: Submission) -> ClickOutcome:
        request = await self.store.get_request(sub.request_id)
        if request is None:
            return ClickOutcome(sub, None, f"no approval request {sub.request_id!r}")
        if sub.call_hash != request.call_hash:
            return self._refuse(sub, request, "the dialog showed another call than this "
                                              "request's; nothing was recorded")
        if not sub.approve:
            if len(sub.reason) > REASON_LIMIT:
                return ClickOutcome(sub, request, f"the reason is longer than {REASON_LIMIT} "
                                                  "characters")
            return await self._vote(sub, approve=False, reason=denial_reason(sub.reason))
        route = approval_route(request)
        allowed = route == "message" if sub.form == "grant" else (
            sub.form == "review" and route != "elsewhere")
        if not allowed:
            return self._refuse(sub, request, _no_approval_here(request, route))
        ttl = request.approval.max_grant if sub.choice == CHOICE_APPROVE_FOR else 0.0
        return await self._vote(sub, approve=True, grant_ttl=ttl)

    async def _vote(self, item: Click | Submission, *, approve: bool, grant_ttl: float = 0.0,
                    reason: str = "") -> ClickOutcome:
        request, problem = await cast_vote(
            store=self.store, audit=self.audit, request_id=item.request_id,
            approver=item.approver, approve=approve, channel=self.channel, reason=reason,
            grant_ttl=grant_ttl, now=self.clock(), key=self.key)
        return ClickOutcome(item, request, problem)

    def _refuse(self, item: Click | Submission, request: ApprovalRequest,
                problem: str) -> ClickOutcome:
        """An approval that came the wrong way: audited like any refused vote."""
        self.audit.append(request_event(request, "vote.rejected", approver=item.approver,
                                        channel=self.channel, detail=problem))
        return ClickOutcome(item, request, problem)

    async def reply(self, outcomes: Sequence[ClickOutcome]) -> None:
        """Open the modals, tell refused clickers why (ephemeral), show votes so far.

        Slack API failures are logged, never raised: votes are already recorded.
        """
        for outcome in outcomes:
            item = outcome.click
            try:
                if outcome.view is not None:
                    await self._open(outcome)
                elif outcome.problem is not None:
                    await self._tell(item, f"not recorded: {mrkdwn_escape(outcome.problem)}")
                elif (outcome.request is not None and outcome.request.status == "pending"
                      and item.channel_id and item.message_ts):
                    request = outcome.request
                    await self._call(self.client.chat_update, channel=item.channel_id,
                                     ts=item.message_ts, text=fallback_text(request),
                                     blocks=request_blocks(request, now=self.clock()))
            except Exception as exc:
                log.warning("Slack reply for request %s failed: %s: %s", item.request_id,
                            type(exc).__name__, exc)

    async def _open(self, outcome: ClickOutcome) -> None:
        item = outcome.click
        assert isinstance(item, Click) and outcome.view is not None
        try:
            await self._call(self.client.views_open, trigger_id=item.trigger_id,
                             view=outcome.view)
        except Exception as exc:
            log.warning("could not open a Slack dialog for request %s: %s: %s",
                        item.request_id, type(exc).__name__, exc)
            await self._tell(item, "could not open the dialog; nothing was recorded. Try "
                                   "again, or decide with `agentguard approvals`.")

    async def _tell(self, item: Click | Submission, text: str) -> None:
        if item.channel_id:
            await self._call(self.client.chat_postEphemeral, channel=item.channel_id,
                             user=item.user_id, text=text)

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
        clicks = self.parse(payload)
        log.warning("ignored a replayed Slack interactivity request (%s)", ", ".join(
            f"{c.approver} on {c.request_id}" for c in clicks) or "no recognised click")
        seen: list[Any] = [*clicks] or [None]
        for click in seen:
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
