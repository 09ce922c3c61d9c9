"""Block Kit messages for held calls: what the approver sees in Slack is what runs.

Untrusted text is made inert by :mod:`.markup` (``plain_text`` objects, entity-escaped code
blocks); only ids we validated ourselves (``U0123ABC``) are ever written as ``<@U...>``
mentions.

A message shows at most 300 characters of each value and 2600 of all arguments. Where that
cuts anything, the message cannot approve: :func:`approval_route` says where the call can be
read in full and decided — the message itself, the review modal (:mod:`.modals`), or, when
even a modal cannot hold it, only ``agentguard approvals show ID --full``. The interactivity
endpoint applies the same function to the stored request before it counts an approval, so a
stale or forged button changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from agentguard.channels.render import format_call_hash
from agentguard.channels.slack.markup import (
    FIELD_LIMIT,
    HEADER_LIMIT,
    TEXT_LIMIT,
    TOKEN,
    code_escape,
    cut,
    entities,
    esc,
    mrkdwn_escape,
    plain,
    prefix,
)
from agentguard.channels.slack.modals import review_fits
from agentguard.durations import format_duration
from agentguard.sanitize import render_args
from agentguard.types import ApprovalRequest

__all__ = [
    "ACTIONS_BLOCK_ID",
    "ACTION_APPROVE",
    "ACTION_APPROVE_FOR",
    "ACTION_DENY",
    "ACTION_VIEW",
    "ARGS_LIMIT",
    "VALUE_LIMIT",
    "Route",
    "approval_route",
    "approve_for_value",
    "fallback_text",
    "mrkdwn_escape",
    "outcome_blocks",
    "outcome_text",
    "parse_action_value",
    "request_blocks",
    "route_note",
    "slack_user_id",
]

ACTIONS_BLOCK_ID = "agentguard_decision"
ACTION_APPROVE = "agentguard_approve"
ACTION_APPROVE_FOR = "agentguard_approve_for"
ACTION_DENY = "agentguard_deny"
ACTION_VIEW = "agentguard_view"

#: Characters of (Slack-escaped) argument text shown inside the code block.
ARGS_LIMIT = 2600
#: Characters of one (escaped) string value shown before it is cut.
VALUE_LIMIT = 300

#: Where a held call can be read in full, and so approved: in the message, in the review
#: modal, or only outside Slack (``agentguard approvals show ID --full``).
Route = Literal["message", "modal", "elsewhere"]

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# A string in render_args output: its own quotes and backslashes are escaped inside.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_STATUS_WORD = {"approved": "Approved", "consumed": "Approved", "denied": "Denied",
                "expired": "Expired", "cancelled": "Unreachable"}


def slack_user_id(identity: str) -> str | None:
    """The Slack user id in ``slack:U0123ABC`` (validated), else None."""
    if identity.startswith("slack:") and _USER_ID.match(identity[6:]):
        return identity[6:]
    return None


def _when(at: float | None) -> str:
    if at is None:
        return "unknown time"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- button values


def approve_for_value(request_id: str, seconds: float) -> str:
    """Button value of "Approve for N": ``<request id>:<seconds>``."""
    return f"{request_id}:{int(seconds)}"


def parse_action_value(action_id: str, value: str) -> tuple[str, float] | None:
    """(request id, grant seconds) carried by one of our buttons, or None if malformed."""
    request_id, _, seconds = value.partition(":")
    if not _REQUEST_ID.match(request_id):
        return None
    if action_id != ACTION_APPROVE_FOR:
        return (request_id, 0.0) if not seconds else None
    if not seconds.isdigit() or int(seconds) <= 0:
        return None
    return request_id, float(seconds)


# --------------------------------------------------------------------------- pieces


def _call(request: ApprovalRequest) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    call = request.call if isinstance(request.call, Mapping) else {}
    context = call.get("context")
    return call, context if isinstance(context, Mapping) else {}


def _call_rows(request: ApprovalRequest) -> list[tuple[str, str]]:
    """The fields that come from the call and the rule (each must fit, or the message cuts)."""
    call, context = _call(request)
    principal = esc(call.get("principal", "?"))
    if context.get("acting_for"):
        principal += f", acting for {esc(context['acting_for'])}"
    labels = ", ".join(esc(label) for label in request.labels) or "none"
    spec = request.approval
    who = ", ".join(esc(a) for a in spec.approvers) or "anyone the channel verifies"
    need = "1 approval" if spec.quorum <= 1 else f"{spec.quorum} approvals"
    requires = f"{need} by {who}"
    if spec.separation_of_duties:
        requires += "; the requester and the human it acts for may not approve"
    if request.reauth is not None:
        requires += f"; then {esc(request.reauth.method)} re-authentication"
    rows = [
        ("Tool", f"{esc(call.get('tool', '?'))} on server {esc(call.get('server', '?'))}"),
        ("Principal", principal),
        ("Class", f"{esc(request.privilege)} (labels: {labels})"),
        ("Requires", requires),
        ("Request", esc(request.id)),
    ]
    if context.get("source_ip"):
        rows.append(("Source", esc(context["source_ip"])))
    if call.get("session_id"):
        rows.append(("Session", esc(call["session_id"])))
    extra = context.get("extra")
    if isinstance(extra, Mapping) and extra:
        rows.append(("Context", "; ".join(
            f"{esc(k)}={esc(v)}" for k, v in sorted(extra.items(), key=lambda kv: str(kv[0])))))
    return rows


def _timing(request: ApprovalRequest, now: float, pending: bool) -> tuple[str, str]:
    left = max(0, int(request.expires_at - now))
    if not pending:
        return "Held at", _when(request.created_at)
    if left:
        return "Expires", f"{_when(request.expires_at)} ({format_duration(left)} left)"
    return "Expires", f"{_when(request.expires_at)} (expired)"


def _field_text(label: str, value: str) -> str:
    return f"{label}\n{value}"


def _fields(request: ApprovalRequest, now: float, pending: bool) -> list[dict[str, Any]]:
    rows = _call_rows(request)
    rows.insert(4, _timing(request, now, pending))
    return [plain(_field_text(label, value), FIELD_LIMIT) for label, value in rows]


def _why_text(request: ApprovalRequest) -> str:
    rule = f"rule {esc(request.rule_id)}" if request.rule_id else "policy defaults"
    return f"Why held ({rule}): {esc(request.reason) or 'no reason given'}"


def _shorten_values(rendered: str, limit: int) -> tuple[str, int]:
    """Cut each string longer than ``limit`` in rendered arguments; return (text, count)."""
    count = 0

    def shorten(match: re.Match[str]) -> str:
        nonlocal count
        inner = match.group()[1:-1]
        if len(inner) <= limit:
            return match.group()
        count += 1
        return f'"{prefix(inner, limit)}…" [truncated: {len(inner):,} characters]'

    return _STRING.sub(shorten, rendered), count


def _arguments(request: ApprovalRequest) -> tuple[dict[str, Any], bool]:
    """The arguments section, and whether it had to cut anything."""
    call, _ = _call(request)
    full, _ = render_args(call.get("args", {}), limit=2**62)
    rendered, shortened = _shorten_values(full, VALUE_LIMIT)
    code = code_escape(rendered)
    over = len(code) > ARGS_LIMIT
    if over:
        kept, used = [], 0
        for match in TOKEN.finditer(rendered):
            piece = code_escape(match.group())
            if used + len(piece) > ARGS_LIMIT:
                break
            kept.append(match.group())
            used += len(piece)
        code = code_escape("".join(kept)) + " …"
    title = "*Arguments*"
    if over or shortened:
        what = "long values and the rest of the arguments" if over and shortened else (
            "the rest of the arguments" if over else "long values")
        title += (f" ({what} truncated — full call hash "
                  f"{entities(format_call_hash(request.call_hash))})")
    block = {"type": "section",
             "text": {"type": "mrkdwn", "verbatim": True, "text": f"{title}\n```\n{code}\n```"}}
    return block, bool(over or shortened)


def approval_route(request: ApprovalRequest) -> Route:
    """Where ``request`` can be read in full, and so approved.

    ``message`` when the message cuts nothing (no field, reason or argument); else ``modal``
    when the review modal holds the whole call; else ``elsewhere``: Slack cannot show it,
    so Slack cannot approve it. Deterministic in the stored request: the interactivity
    endpoint recomputes it before counting any approval.
    """
    cut_field = any(len(_field_text(label, value)) > FIELD_LIMIT
                    for label, value in _call_rows(request))
    if not cut_field and len(_why_text(request)) <= TEXT_LIMIT and not _arguments(request)[1]:
        return "message"
    return "modal" if review_fits(request) else "elsewhere"


def _votes(request: ApprovalRequest) -> str:
    shown = []
    for vote in request.votes:
        verb = "approved" if vote.approve else "denied"
        if vote.approve and vote.grant_ttl:
            verb += f" for {format_duration(vote.grant_ttl)}"
        shown.append(f"{esc(vote.approver)} {verb} at {_when(vote.at)} via {esc(vote.channel)}")
    return "; ".join(shown)


def _context(request: ApprovalRequest) -> dict[str, Any]:
    grants = (f"may approve this call only, or for up to "
              f"{format_duration(request.approval.max_grant)}"
              if request.approval.max_grant > 0 else "approval is for this call only")
    elements = [plain(f"call hash {format_call_hash(request.call_hash)}; {grants}")]
    if request.votes:
        elements.append(plain(f"votes so far: {_votes(request)}"))
    return {"type": "context", "elements": elements}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": plain(text, 75)}
    if style:
        button["style"] = style
    return button


_ROUTE_NOTES = {
    "modal": "This call is longer than a Slack message can show, so it cannot be approved "
             "from here: open “View all arguments” to read the whole call and decide there.",
    "elsewhere": "This call is too large for Slack to show in full, so it cannot be approved "
                 "in Slack. Read it with `agentguard approvals show {id} --full` and decide "
                 "at the approver terminal; you can still deny it here.",
}


def route_note(request: ApprovalRequest, route: Route) -> str | None:
    """Why the message offers no Approve, and where to decide instead (None: it does)."""
    note = _ROUTE_NOTES.get(route)
    return note.format(id=esc(request.id)) if note else None


def _actions(request: ApprovalRequest, route: Route) -> list[dict[str, Any]]:
    if route == "message":
        elements = [_button("Approve", ACTION_APPROVE, request.id, "primary")]
        max_grant = request.approval.max_grant
        if max_grant >= 1:
            elements.append(_button(f"Approve for {format_duration(max_grant)}…",
                                    ACTION_APPROVE_FOR, approve_for_value(request.id, max_grant)))
    elif route == "modal":
        elements = [_button("View all arguments", ACTION_VIEW, request.id, "primary")]
    else:
        elements = []
    elements.append(_button("Deny…", ACTION_DENY, request.id, "danger"))
    blocks: list[dict[str, Any]] = []
    note = route_note(request, route)
    if note:
        blocks.append({"type": "section", "text": plain(note)})
    blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements})
    return blocks


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, HEADER_LIMIT)}


def _details(request: ApprovalRequest, now: float, pending: bool) -> list[dict[str, Any]]:
    return [
        {"type": "section", "fields": _fields(request, now, pending)},
        {"type": "section", "text": plain(_why_text(request))},
        _arguments(request)[0],
        _context(request),
    ]


# --------------------------------------------------------------------------- messages


def request_blocks(request: ApprovalRequest, *, now: float) -> list[dict[str, Any]]:
    """The message for a pending request: details, arguments, and the decision buttons.

    Where the message shows everything: Approve, "Approve for N…" (the rule's ``max_grant``,
    only where the rule allows a grant; confirmed in a modal) and "Deny…" (asks a reason).
    Where it had to cut: "View all arguments" (the review modal, which decides) and Deny;
    where even a modal cannot hold the call: Deny only, and where to read it in full.

    Args:
        request: The held call.
        now: Current Unix time (for the time left).
    """
    call, _ = _call(request)
    return [
        _header(f"Approval needed: {esc(call.get('tool', '?'))}"),
        *_details(request, now, pending=True),
        *_actions(request, approval_route(request)),
    ]


def outcome_text(request: ApprovalRequest, *, now: float) -> str:
    """One plain line saying how a request ended: who, when, and what it means."""
    by = ", ".join(esc(name) for name in request.decided_by)
    match request.status:
        case "approved" | "consumed":
            grants = [v.grant_ttl for v in request.votes if v.approve and v.grant_ttl]
            extra = f" (and for {format_duration(min(grants))})" if grants else ""
            return (f"✅ Approved by {by or 'approvers'} at {_when(request.decided_at)}"
                    f"{extra}: the call may run")
        case "denied":
            reasons = [esc(v.reason) for v in request.votes if not v.approve and v.reason]
            why = f" ({reasons[-1]})" if reasons else ""
            return f"⛔ Denied by {by or 'an approver'} at {_when(request.decided_at)}{why}: " \
                   "nothing ran"
        case "expired":
            return f"⌛ Expired at {_when(min(request.expires_at, now))}: no decision in time, " \
                   "nothing ran"
        case "cancelled":
            return f"⚠️ Unreachable at {_when(request.decided_at or now)}: no approval channel " \
                   "could decide, nothing ran"
        case _:
            got = sum(1 for v in request.votes if v.approve)
            return f"⏳ Pending: {got} of {request.approval.quorum} approvals so far"


def outcome_blocks(request: ApprovalRequest, *, now: float) -> list[dict[str, Any]]:
    """The message once ``request`` is settled: the same details, the outcome, no buttons."""
    call, _ = _call(request)
    blocks = [
        _header(f"{_STATUS_WORD.get(request.status, 'Pending')}: {esc(call.get('tool', '?'))}"),
        {"type": "section", "text": plain(outcome_text(request, now=now))},
        *_details(request, now, pending=request.status == "pending"),
    ]
    mentions = [uid for uid in map(slack_user_id, request.decided_by) if uid]
    if mentions:
        # Ids validated by slack_user_id: the only markup we ever write.
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn", "text": "decided by " + ", ".join(f"<@{u}>" for u in mentions)}]})
    return blocks


def fallback_text(request: ApprovalRequest) -> str:
    """Notification text of the message (shown where blocks are not)."""
    call, _ = _call(request)
    tool, server = (mrkdwn_escape(str(call.get(k, "?"))) for k in ("tool", "server"))
    what = f"{tool} on {server}"
    if request.status == "pending":
        return cut(f"agentguard: approval needed for {what}", 300)
    return cut(f"agentguard: {what}: {request.status}", 300)
