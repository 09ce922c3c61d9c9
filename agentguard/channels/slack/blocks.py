"""Block Kit messages for held calls: what the approver sees in Slack is what runs.

Untrusted text (tool, server, principal, reason, arguments, identities) never becomes Slack
markup. It goes into ``plain_text`` objects (``emoji: false``; Slack parses no mentions,
links or formatting there) after :func:`~agentguard.sanitize.escape_text`. The arguments
need a code block, hence ``mrkdwn``: there ``&``, ``<`` and ``>`` become entities (so
``<!channel>`` or ``<https://evil|ok>`` show literally), every backtick becomes ``\\x60`` (a
value cannot close the fence) and ``verbatim`` stops auto-linking. Only ids we validated
ourselves (``U0123ABC``) are ever written as ``<@U...>`` mentions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agentguard.channels.render import format_call_hash
from agentguard.durations import format_duration
from agentguard.sanitize import escape_text, render_args
from agentguard.types import ApprovalRequest

__all__ = [
    "ACTIONS_BLOCK_ID",
    "ACTION_APPROVE",
    "ACTION_APPROVE_FOR",
    "ACTION_DENY",
    "approve_for_value",
    "fallback_text",
    "mrkdwn_escape",
    "outcome_blocks",
    "outcome_text",
    "parse_action_value",
    "request_blocks",
    "slack_user_id",
]

ACTIONS_BLOCK_ID = "agentguard_decision"
ACTION_APPROVE = "agentguard_approve"
ACTION_APPROVE_FOR = "agentguard_approve_for"
ACTION_DENY = "agentguard_deny"

#: Slack's limits (Block Kit reference): section text 3000, field 2000, header 150.
_TEXT_LIMIT = 3000
_FIELD_LIMIT = 2000
_HEADER_LIMIT = 150
#: Characters of (Slack-escaped) argument text shown inside the code block.
ARGS_LIMIT = 2600
#: Characters of one (escaped) string value shown before it is cut.
VALUE_LIMIT = 300

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# One displayed character of escaped text: a backslash escape, an entity, or one character.
_TOKEN = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})|&(?:amp|lt|gt);|.", re.S)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# A string in render_args output: its own quotes and backslashes are escaped inside.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_STATUS_WORD = {"approved": "Approved", "consumed": "Approved", "denied": "Denied",
                "expired": "Expired", "cancelled": "Unreachable"}


# --------------------------------------------------------------------------- escaping


def _entities(text: str) -> str:
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


def mrkdwn_escape(text: str) -> str:
    """Escape untrusted text for a ``mrkdwn`` object: invisible characters shown as escapes,
    ``& < >`` as entities. Mentions and links can then not be formed."""
    return _entities(escape_text(text))


def _code_escape(rendered: str) -> str:
    """Escape already-rendered (escape_text'ed) argument text for a code block."""
    return _entities(rendered).replace("`", "\\x60")


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of escaped text within ``limit`` characters that splits no escape."""
    out, used = [], 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if used + len(token) > limit:
            break
        out.append(token)
        used += len(token)
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    """Cut escaped text to at most ``limit`` characters (ending with …) if it is longer."""
    return text if len(text) <= limit else _prefix(text, limit - 1) + "…"


def _plain(text: str, limit: int = _TEXT_LIMIT) -> dict[str, Any]:
    """A ``plain_text`` object; ``text`` must already be escaped."""
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": False}


def _esc(value: Any) -> str:
    return escape_text(value if isinstance(value, str) else str(value))


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


def _fields(request: ApprovalRequest, now: float, pending: bool) -> list[dict[str, Any]]:
    call, context = _call(request)
    principal = _esc(call.get("principal", "?"))
    if context.get("acting_for"):
        principal += f", acting for {_esc(context['acting_for'])}"
    labels = ", ".join(_esc(label) for label in request.labels) or "none"
    spec = request.approval
    who = ", ".join(_esc(a) for a in spec.approvers) or "anyone the channel verifies"
    need = "1 approval" if spec.quorum <= 1 else f"{spec.quorum} approvals"
    requires = f"{need} by {who}"
    if spec.separation_of_duties:
        requires += "; the requester and the human it acts for may not approve"
    if request.reauth is not None:
        requires += f"; then {_esc(request.reauth.method)} re-authentication"
    left = max(0, int(request.expires_at - now))
    if not pending:
        timing = ("Held at", _when(request.created_at))
    elif left:
        timing = ("Expires", f"{_when(request.expires_at)} ({format_duration(left)} left)")
    else:
        timing = ("Expires", f"{_when(request.expires_at)} (expired)")
    rows = [
        ("Tool", f"{_esc(call.get('tool', '?'))} on server {_esc(call.get('server', '?'))}"),
        ("Principal", principal),
        ("Class", f"{_esc(request.privilege)} (labels: {labels})"),
        ("Requires", requires),
        timing,
        ("Request", _esc(request.id)),
    ]
    if context.get("source_ip"):
        rows.append(("Source", _esc(context["source_ip"])))
    if call.get("session_id"):
        rows.append(("Session", _esc(call["session_id"])))
    extra = context.get("extra")
    if isinstance(extra, Mapping) and extra:
        rows.append(("Context", "; ".join(
            f"{_esc(k)}={_esc(v)}" for k, v in sorted(extra.items(), key=lambda kv: str(kv[0])))))
    return [_plain(f"{label}\n{value}", _FIELD_LIMIT) for label, value in rows[:10]]


def _why(request: ApprovalRequest) -> dict[str, Any]:
    rule = f"rule {_esc(request.rule_id)}" if request.rule_id else "policy defaults"
    reason = _esc(request.reason) or "no reason given"
    return {"type": "section", "text": _plain(f"Why held ({rule}): {reason}")}


def _shorten_values(rendered: str, limit: int) -> tuple[str, int]:
    """Cut each string longer than ``limit`` in rendered arguments; return (text, count)."""
    count = 0

    def shorten(match: re.Match[str]) -> str:
        nonlocal count
        inner = match.group()[1:-1]
        if len(inner) <= limit:
            return match.group()
        count += 1
        return f'"{_prefix(inner, limit)}…" [truncated: {len(inner):,} characters]'

    return _STRING.sub(shorten, rendered), count


def _arguments(request: ApprovalRequest, limit: int) -> dict[str, Any]:
    call, _ = _call(request)
    full, _ = render_args(call.get("args", {}), limit=2**62)
    rendered, shortened = _shorten_values(full, VALUE_LIMIT)
    code = _code_escape(rendered)
    cut = len(code) > limit
    if cut:
        kept, used = [], 0
        for match in _TOKEN.finditer(rendered):
            piece = _code_escape(match.group())
            if used + len(piece) > limit:
                break
            kept.append(match.group())
            used += len(piece)
        code = _code_escape("".join(kept)) + " …"
    title = "*Arguments*"
    if cut or shortened:
        what = "long values and the rest of the arguments" if cut and shortened else (
            "the rest of the arguments" if cut else "long values")
        title += (f" ({what} truncated — full call hash "
                  f"{_entities(format_call_hash(request.call_hash))})")
    return {"type": "section",
            "text": {"type": "mrkdwn", "verbatim": True, "text": f"{title}\n```\n{code}\n```"}}


def _votes(request: ApprovalRequest) -> str:
    shown = []
    for vote in request.votes:
        verb = "approved" if vote.approve else "denied"
        if vote.approve and vote.grant_ttl:
            verb += f" for {format_duration(vote.grant_ttl)}"
        shown.append(f"{_esc(vote.approver)} {verb} at {_when(vote.at)} via {_esc(vote.channel)}")
    return "; ".join(shown)


def _context(request: ApprovalRequest) -> dict[str, Any]:
    grants = (f"may approve this call only, or for up to "
              f"{format_duration(request.approval.max_grant)}"
              if request.approval.max_grant > 0 else "approval is for this call only")
    elements = [_plain(f"call hash {format_call_hash(request.call_hash)}; {grants}")]
    if request.votes:
        elements.append(_plain(f"votes so far: {_votes(request)}"))
    return {"type": "context", "elements": elements}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": _plain(text, 75)}
    if style:
        button["style"] = style
    return button


def _actions(request: ApprovalRequest) -> dict[str, Any]:
    elements = [_button("Approve", ACTION_APPROVE, request.id, "primary")]
    max_grant = request.approval.max_grant
    if max_grant >= 1:
        elements.append(_button(f"Approve for {format_duration(max_grant)}", ACTION_APPROVE_FOR,
                                approve_for_value(request.id, max_grant)))
    elements.append(_button("Deny", ACTION_DENY, request.id, "danger"))
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text, _HEADER_LIMIT)}


def _details(
    request: ApprovalRequest, now: float, arg_limit: int, pending: bool
) -> list[dict[str, Any]]:
    return [
        {"type": "section", "fields": _fields(request, now, pending)},
        _why(request),
        _arguments(request, arg_limit),
        _context(request),
    ]


# --------------------------------------------------------------------------- messages


def request_blocks(
    request: ApprovalRequest, *, now: float, arg_limit: int = ARGS_LIMIT,
) -> list[dict[str, Any]]:
    """The message for a pending request: details, arguments, and the decision buttons.

    "Approve for N" offers the rule's ``max_grant`` and exists only where the rule allows a
    grant.

    Args:
        request: The held call.
        now: Current Unix time (for the time left).
        arg_limit: Characters of argument text shown before truncating (the call hash is
            then shown with a note).
    """
    call, _ = _call(request)
    return [
        _header(f"Approval needed: {_esc(call.get('tool', '?'))}"),
        *_details(request, now, arg_limit, pending=True),
        _actions(request),
    ]


def outcome_text(request: ApprovalRequest, *, now: float) -> str:
    """One plain line saying how a request ended: who, when, and what it means."""
    by = ", ".join(_esc(name) for name in request.decided_by)
    match request.status:
        case "approved" | "consumed":
            grants = [v.grant_ttl for v in request.votes if v.approve and v.grant_ttl]
            extra = f" (and for {format_duration(min(grants))})" if grants else ""
            return (f"✅ Approved by {by or 'approvers'} at {_when(request.decided_at)}"
                    f"{extra}: the call may run")
        case "denied":
            reasons = [_esc(v.reason) for v in request.votes if not v.approve and v.reason]
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


def outcome_blocks(
    request: ApprovalRequest, *, now: float, arg_limit: int = ARGS_LIMIT,
) -> list[dict[str, Any]]:
    """The message once ``request`` is settled: the same details, the outcome, no buttons."""
    call, _ = _call(request)
    blocks = [
        _header(f"{_STATUS_WORD.get(request.status, 'Pending')}: {_esc(call.get('tool', '?'))}"),
        {"type": "section", "text": _plain(outcome_text(request, now=now))},
        *_details(request, now, arg_limit, pending=request.status == "pending"),
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
        return _cut(f"agentguard: approval needed for {what}", 300)
    return _cut(f"agentguard: {what}: {request.status}", 300)
