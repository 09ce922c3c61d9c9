"""Modals: the whole call, the reason for a denial, the confirmation of a grant.

A Slack message holds 50 blocks and shows 300 characters of each value; a held call can be
longer. Such a call is not approvable from the message: "View all arguments" opens a modal
(``views.open`` with the click's ``trigger_id``) showing the whole call as the approver
terminal prints it (:func:`~agentguard.channels.render.render_request`, escaped, nothing cut),
in as many code sections as it takes, with the decision in the same modal. A call that even a
modal cannot hold (100 blocks of 3000 characters) cannot be approved in Slack at all.

Deny opens a modal asking for the reason the agent will read; "Approve for N" opens one that
asks to confirm the grant. Only a ``view_submission`` of one of these modals ever casts a vote
for them: Slack signs it and sends it only for views this app opened, and each view carries
in ``private_metadata`` which form it is and the request and call hash it showed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentguard.channels.render import REASON_LIMIT, format_call_hash, render_request
from agentguard.channels.slack.markup import code_block, code_sections, esc, plain
from agentguard.durations import format_duration
from agentguard.types import ApprovalRequest

__all__ = [
    "CALLBACK_ID",
    "CHOICE_APPROVE",
    "CHOICE_APPROVE_FOR",
    "CHOICE_DENY",
    "MAX_MODAL_BLOCKS",
    "Form",
    "ModalMetadata",
    "deny_view",
    "grant_view",
    "parse_metadata",
    "review_fits",
    "review_view",
    "submitted_choice",
    "submitted_reason",
]

Form = Literal["review", "deny", "grant"]

CALLBACK_ID = "agentguard_decision"
MAX_MODAL_BLOCKS = 100
CHOICE_APPROVE = "approve"
CHOICE_APPROVE_FOR = "approve_for"
CHOICE_DENY = "deny"
_DECISION_BLOCK, _DECISION_ACTION = "agentguard_choice", "choice"
_REASON_BLOCK, _REASON_ACTION = "agentguard_reason", "reason"
#: Blocks of the review modal besides the call itself: the intro, the decision, the reason.
_REVIEW_EXTRA_BLOCKS = 3


class ModalMetadata(BaseModel):
    """What a modal showed, carried in its ``private_metadata`` (written only by us).

    Attributes:
        form: Which modal: ``review`` (the whole call and the decision), ``deny`` (the reason)
            or ``grant`` (confirming "approve for N").
        request_id: The request shown.
        call_hash: The call hash of the request shown (the vote binds to it).
        channel_id: Conversation of the message the modal was opened from.
        message_ts: That message (updated as votes come in).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    form: Form = Field(alias="f")
    request_id: str = Field(alias="r", pattern=r"^[A-Za-z0-9_-]{16,128}$")
    call_hash: str = Field(alias="h", max_length=200)
    channel_id: str | None = Field(default=None, alias="c", max_length=64)
    message_ts: str | None = Field(default=None, alias="m", max_length=64)

    def encode(self) -> str:
        """The ``private_metadata`` string."""
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True),
                          separators=(",", ":"))


def parse_metadata(text: str) -> ModalMetadata | None:
    """The metadata of one of our modals, or None if ``text`` is not ours."""
    try:
        return ModalMetadata.model_validate_json(text)
    except ValidationError:
        return None


# --------------------------------------------------------------------------- pieces


def _whole_call(request: ApprovalRequest, now: float) -> list[str]:
    """The whole call as the approver terminal prints it, in code-block pieces."""
    return code_sections(render_request(request, arg_limit=2**62, now=now))


def review_fits(request: ApprovalRequest) -> bool:
    """Whether the review modal can show every character of ``request``."""
    pieces = _whole_call(request, now=request.created_at)
    return len(pieces) + _REVIEW_EXTRA_BLOCKS <= MAX_MODAL_BLOCKS


def _what(request: ApprovalRequest) -> str:
    call = request.call
    return (f"{esc(call.get('tool', '?'))} on server {esc(call.get('server', '?'))} "
            f"for {esc(call.get('principal', '?'))} (request {esc(request.id)})")


def _reason_input(label: str) -> dict[str, Any]:
    return {"type": "input", "block_id": _REASON_BLOCK, "optional": True,
            "label": plain(label, 2000),
            "hint": plain("Recorded with your vote; the agent reads it with the refusal. "
                          "Left empty: 'no reason given'.", 2000),
            "element": {"type": "plain_text_input", "action_id": _REASON_ACTION,
                        "multiline": True, "max_length": REASON_LIMIT}}


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": plain(text, 75), "value": value}


def _modal(title: str, submit: str, metadata: ModalMetadata,
           blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "modal", "callback_id": CALLBACK_ID, "private_metadata": metadata.encode(),
            "title": plain(title, 24), "submit": plain(submit, 24),
            "close": plain("Cancel", 24), "blocks": blocks}


# --------------------------------------------------------------------------- the modals


def review_view(request: ApprovalRequest, metadata: ModalMetadata, *, now: float
                ) -> dict[str, Any]:
    """The whole call, escaped and uncut, and the decision (approve, approve for N, deny).

    Raises:
        ValueError: the call does not fit a modal (see :func:`review_fits`).
    """
    pieces = _whole_call(request, now)
    if len(pieces) + _REVIEW_EXTRA_BLOCKS > MAX_MODAL_BLOCKS:
        raise ValueError("the call is too large for a Slack modal")
    options = [_option("Approve this call", CHOICE_APPROVE)]
    if request.approval.max_grant >= 1:
        grant = format_duration(request.approval.max_grant)
        options.append(_option(f"Approve, and grant {grant}", CHOICE_APPROVE_FOR))
    options.append(_option("Deny", CHOICE_DENY))
    intro = plain(f"Everything this call would run, escaped as it runs and not cut "
                  f"({len(pieces)} part{'s' if len(pieces) > 1 else ''}). Read it, then "
                  f"decide at the end. Call hash {format_call_hash(request.call_hash)}.")
    return _modal("Review held call", "Submit decision", metadata, [
        {"type": "section", "text": intro},
        *(code_block(piece) for piece in pieces),
        {"type": "input", "block_id": _DECISION_BLOCK, "label": plain("Decision", 2000),
         "element": {"type": "radio_buttons", "action_id": _DECISION_ACTION,
                     "options": options}},
        _reason_input("Reason, if you deny"),
    ])


def deny_view(request: ApprovalRequest, metadata: ModalMetadata) -> dict[str, Any]:
    """Ask why the call is denied."""
    return _modal("Deny held call", "Deny", metadata, [
        {"type": "section", "text": plain(f"Deny {_what(request)}? Nothing will run.")},
        _reason_input("Why (optional)"),
    ])


def grant_view(request: ApprovalRequest, metadata: ModalMetadata) -> dict[str, Any]:
    """Confirm "approve for N": the call runs, and so do calls like it for N."""
    grant = format_duration(request.approval.max_grant)
    call = request.call
    text = (f"Approve {_what(request)}, and grant {grant}: for {grant}, further calls of "
            f"{esc(call.get('tool', '?'))} by {esc(call.get('principal', '?'))} that this "
            "rule holds run without asking anyone.")
    return _modal("Confirm grant", f"Approve for {grant}", metadata,
                  [{"type": "section", "text": plain(text)}])


# --------------------------------------------------------------------------- submissions


def _value(values: Any, block: str, action: str) -> Any:
    if not isinstance(values, dict):
        return None
    entry = values.get(block, {})
    return entry.get(action) if isinstance(entry, dict) else None


def submitted_choice(values: Any) -> str | None:
    """The decision chosen in a review modal (``approve``, ``approve_for``, ``deny``)."""
    entry = _value(values, _DECISION_BLOCK, _DECISION_ACTION)
    option = entry.get("selected_option") if isinstance(entry, dict) else None
    value = option.get("value") if isinstance(option, dict) else None
    return value if value in (CHOICE_APPROVE, CHOICE_APPROVE_FOR, CHOICE_DENY) else None


def submitted_reason(values: Any) -> str:
    """The reason typed in a modal ("" when none)."""
    entry = _value(values, _REASON_BLOCK, _REASON_ACTION)
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else ""
