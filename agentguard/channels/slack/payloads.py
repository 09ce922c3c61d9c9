"""Slack interactivity payloads, validated: button clicks and modal submissions.

Only what Slack authenticated reaches here (the HTTP signature or the Socket Mode connection
was checked first). Identities are Slack user ids (``U…``/``W…``), never display names; a
click names its request by the button's value, a submission by the ``private_metadata`` we
wrote into the modal. Anything malformed or foreign is dropped with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentguard.channels.slack.blocks import (
    ACTION_APPROVE,
    ACTION_APPROVE_FOR,
    ACTION_DENY,
    ACTION_VIEW,
    parse_action_value,
)
from agentguard.channels.slack.modals import (
    CALLBACK_ID,
    CHOICE_APPROVE_FOR,
    CHOICE_DENY,
    Form,
    parse_metadata,
    submitted_choice,
    submitted_reason,
)

__all__ = ["Action", "Click", "Submission", "parse_interaction"]

log = logging.getLogger("agentguard.channels.slack")

Action = Literal["approve", "approve_for", "deny", "view"]
_ACTIONS: dict[str, Action] = {ACTION_APPROVE: "approve", ACTION_APPROVE_FOR: "approve_for",
                               ACTION_DENY: "deny", ACTION_VIEW: "view"}
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")


# --------------------------------------------------------------------------- wire models


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
    trigger_id: str | None = Field(default=None, max_length=200)


class _State(_Loose):
    values: dict[str, Any] = Field(default_factory=dict)


class _View(_Loose):
    id: str = ""
    callback_id: str = ""
    private_metadata: str = Field(default="", max_length=3000)
    state: _State = Field(default_factory=_State)


class _ViewSubmission(_Loose):
    type: Literal["view_submission"]
    user: _Id
    view: _View
    team: _Id | None = None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Click:
    """One authenticated click on one of our buttons in a message.

    Attributes:
        user_id: Slack user id of the clicker.
        request_id: The approval request the button belongs to.
        action: ``approve`` (votes), or ``approve_for``, ``deny``, ``view`` (open a modal).
        channel_id: Conversation of the message (for the reply and the update).
        message_ts: Timestamp of the message (to update it in place).
        trigger_id: What ``views.open`` needs to open a modal for this click.
    """

    user_id: str
    request_id: str
    action: Action
    channel_id: str | None
    message_ts: str | None
    trigger_id: str | None

    @property
    def approver(self) -> str:
        """The verified identity: ``slack:<user id>``."""
        return f"slack:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Submission:
    """One authenticated submission of one of our modals.

    Attributes:
        user_id: Slack user id of the submitter.
        form: Which modal (``review``, ``deny``, ``grant``), from its metadata.
        request_id: The request the modal showed.
        call_hash: The call hash of what the modal showed.
        choice: ``approve``, ``approve_for`` or ``deny``.
        reason: What was typed as the reason ("" when nothing).
        channel_id: Conversation of the message the modal was opened from.
        message_ts: That message.
    """

    user_id: str
    form: Form
    request_id: str
    call_hash: str
    choice: str
    reason: str
    channel_id: str | None
    message_ts: str | None

    @property
    def approver(self) -> str:
        """The verified identity: ``slack:<user id>``."""
        return f"slack:{self.user_id}"

    @property
    def approve(self) -> bool:
        """Whether this submission approves."""
        return self.choice != CHOICE_DENY


# --------------------------------------------------------------------------- parsing


def _trusted_user(user: _Id, team: _Id | None, team_id: str | None) -> bool:
    if team_id and (team is None or team.id != team_id):
        log.warning("ignored an interaction from another Slack workspace")
        return False
    if not _USER_ID.match(user.id):
        log.warning("ignored an interaction with a malformed Slack user id")
        return False
    return True


def _clicks(payload: Mapping[str, Any], team_id: str | None) -> list[Click]:
    try:
        actions = _BlockActions.model_validate(payload)
    except ValidationError as exc:
        log.warning("ignored a malformed Slack block_actions payload (%d errors)",
                    exc.error_count())
        return []
    if not _trusted_user(actions.user, actions.team, team_id):
        return []
    container = actions.container or _Container()
    channel_id = container.channel_id or (actions.channel.id if actions.channel else None)
    message_ts = container.message_ts or (actions.message.ts if actions.message else None)
    clicks = []
    for action in actions.actions:
        kind = _ACTIONS.get(action.action_id)
        if kind is None:
            continue
        parsed = parse_action_value(action.action_id, action.value)
        if parsed is None:
            log.warning("ignored a click with a malformed button value")
            continue
        clicks.append(Click(user_id=actions.user.id, request_id=parsed[0], action=kind,
                            channel_id=channel_id, message_ts=message_ts,
                            trigger_id=actions.trigger_id))
    return clicks


def _submission(payload: Mapping[str, Any], team_id: str | None) -> list[Submission]:
    try:
        submitted = _ViewSubmission.model_validate(payload)
    except ValidationError as exc:
        log.warning("ignored a malformed Slack view_submission payload (%d errors)",
                    exc.error_count())
        return []
    view = submitted.view
    if view.callback_id != CALLBACK_ID:
        return []
    metadata = parse_metadata(view.private_metadata)
    if metadata is None:
        log.warning("ignored a submission of our modal with unreadable metadata")
        return []
    if not _trusted_user(submitted.user, submitted.team, team_id):
        return []
    choice = {"deny": CHOICE_DENY, "grant": CHOICE_APPROVE_FOR}.get(
        metadata.form) or submitted_choice(view.state.values)
    if choice is None:
        log.warning("ignored a review submission without a decision")
        return []
    return [Submission(user_id=submitted.user.id, form=metadata.form,
                       request_id=metadata.request_id, call_hash=metadata.call_hash,
                       choice=choice, reason=submitted_reason(view.state.values),
                       channel_id=metadata.channel_id, message_ts=metadata.message_ts)]


def parse_interaction(payload: Any, *, team_id: str | None = None
                      ) -> list[Click | Submission]:
    """Our clicks and submissions in an authenticated payload (anything else is ignored).

    Args:
        payload: The decoded interactivity payload.
        team_id: When set, interactions from other workspaces are ignored.
    """
    if not isinstance(payload, Mapping):
        return []
    if payload.get("type") == "block_actions":
        return list(_clicks(payload, team_id))
    if payload.get("type") == "view_submission":
        return list(_submission(payload, team_id))
    return []
