"""The text a human approver reads, shared by the console, the CLI and chat channels.

Everything that came from the agent, the tool server or the store is untrusted and goes
through :func:`~agentguard.sanitize.escape_text`; arguments go through
:func:`~agentguard.sanitize.render_args`. The output is plain text: callers add colour.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agentguard.durations import format_duration
from agentguard.sanitize import escape_text, render_args
from agentguard.types import ApprovalRequest, ApprovalSpec, ReauthSpec

__all__ = [
    "ARG_LIMIT",
    "NO_REASON",
    "REASON_LIMIT",
    "arguments_truncated",
    "denial_reason",
    "format_call_hash",
    "render_request",
    "render_status",
    "time_left",
]

_LABEL_WIDTH = 12
#: Characters of rendered arguments a terminal display shows before cutting (and offering
#: the whole call some other way: a pager, ``approvals show --full``).
ARG_LIMIT = 2000
#: What a denial without a reason records, in every channel.
NO_REASON = "no reason given"
#: Longest denial reason any channel accepts.
REASON_LIMIT = 2000


def denial_reason(text: str | None) -> str:
    """The reason a denial records: the approver's words, or :data:`NO_REASON` when empty.

    Every channel records a denial through this, so the agent reads the same words whether
    the human typed nothing in Slack, at the console or at the approver terminal.
    """
    reason = (text or "").strip()
    return reason or NO_REASON


def arguments_truncated(request: ApprovalRequest, arg_limit: int = ARG_LIMIT) -> bool:
    """Whether :func:`render_request` with ``arg_limit`` cuts the arguments of ``request``."""
    call = request.call if isinstance(request.call, Mapping) else {}
    full, _ = render_args(call.get("args", {}), limit=2**62)
    return len(full) > arg_limit


def format_call_hash(call_hash: str) -> str:
    """``sha256:<hex>`` for display (escaped; an existing ``sha256:`` prefix is kept)."""
    shown = escape_text(str(call_hash))
    return shown if shown.startswith("sha256:") else f"sha256:{shown}"


def time_left(request: ApprovalRequest, now: float | None = None) -> str:
    """``4m59s left`` or ``expired``."""
    remaining = request.expires_at - (time.time() if now is None else now)
    if remaining <= 0:
        return "expired"
    return f"{format_duration(max(1, int(remaining)))} left"


def _text(value: Any) -> str:
    return escape_text(value if isinstance(value, str) else str(value))


def _field(label: str, value: str, width: int) -> list[str]:
    """One ``label  value`` line, wrapped under the value column."""
    head = f"  {label:<{_LABEL_WIDTH}}"
    return textwrap.wrap(
        value,
        width=max(width, len(head) + 20),
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_long_words=True,
        break_on_hyphens=False,
        replace_whitespace=False,
        drop_whitespace=True,
    ) or [head.rstrip()]


def _approvers(spec: ApprovalSpec) -> str:
    if not spec.approvers:
        return "anyone the channel verifies"
    return ", ".join(_text(a) for a in spec.approvers)


def _requirement(spec: ApprovalSpec, reauth: ReauthSpec | None) -> str:
    need = "approval" if spec.quorum <= 1 else f"{spec.quorum} approvals"
    parts = [f"{need} by {_approvers(spec)}"]
    if spec.separation_of_duties:
        parts.append("the requester and the human it acts for may not approve")
    if reauth is not None:
        fresh = f", fresh within {format_duration(reauth.max_age)}" if reauth.max_age > 0 else ""
        who = "the approver" if reauth.subject == "approver" else "the principal"
        parts.append(f"then {_text(reauth.method)} re-authentication by {who}{fresh}")
    return "; ".join(parts)


def _grants(spec: ApprovalSpec) -> str:
    if spec.max_grant > 0:
        return f"this call only, or approve for up to {format_duration(spec.max_grant)}"
    return "this call only (single use)"


def _cut(text: str, limit: int) -> str:
    """Cut escaped text at ``limit`` without splitting an escape like ``\\u202e``."""
    cut = text[:limit]
    start = cut.rfind("\\", max(0, limit - 10))
    if start < 0:
        return cut
    run = len(cut[: start + 1]) - len(cut[: start + 1].rstrip("\\"))
    if run % 2 == 0:  # the last backslash is the second half of an escaped backslash
        return cut
    width = {"x": 4, "u": 6, "U": 10}.get(text[start + 1 : start + 2], 2)
    return cut if start + width <= limit else cut[:start]


def _arguments(args: Any, limit: int, hash_text: str, full_hint: str | None) -> list[str]:
    full, _ = render_args(args, limit=2**62)
    lines: list[str] = []
    if len(full) > limit:
        shown = _cut(full, limit)
        hint = f"; {full_hint}" if full_hint else ""
        lines.append(
            f"  arguments   (truncated: showing {len(shown)} of {len(full)} characters; "
            f"full call hash {hash_text}{hint})"
        )
        body = shown + " ..."
    else:
        lines.append("  arguments")
        body = full
    lines.extend("    " + line for line in body.split("\n"))
    return lines


def _votes(request: ApprovalRequest) -> str:
    shown = []
    for vote in request.votes:
        verb = "approved" if vote.approve else "denied"
        grant = f" for {format_duration(vote.grant_ttl)}" if vote.approve and vote.grant_ttl else ""
        why = f": {_text(vote.reason)}" if vote.reason else ""
        shown.append(f"{_text(vote.approver)} {verb}{grant} via {_text(vote.channel)}{why}")
    return "; ".join(shown)


def render_request(
    request: ApprovalRequest,
    *,
    width: int = 100,
    arg_limit: int = ARG_LIMIT,
    now: float | None = None,
    full_hint: str | None = None,
) -> str:
    """Render a held call for a human approver.

    Shows the request id, tool and server, principal (and who it acts for), privilege class
    and labels, why the call was held, what is required, the escaped arguments (saying so
    and giving the call hash when they had to be truncated), the full call hash and the time
    left. Every untrusted string is escaped; no ANSI codes are added.

    Args:
        request: The held call.
        width: Wrap descriptive lines at this many columns (arguments are not wrapped).
        arg_limit: Show at most this many characters of rendered arguments.
        now: Current Unix time (defaults to :func:`time.time`), for the time left.
        full_hint: Where to read the whole call, added to the truncation note (e.g. "type
            'v' to read the whole call"); plain text of ours, not escaped.

    Returns:
        Multi-line plain text ending without a newline.
    """
    call: Mapping[str, Any] = request.call if isinstance(request.call, Mapping) else {}
    context = call.get("context")
    context = context if isinstance(context, Mapping) else {}
    hash_text = format_call_hash(request.call_hash)
    now = time.time() if now is None else now

    lines = [f"agentguard: approval needed for request {_text(request.id)}"]
    lines += _field(
        "tool", f"{_text(call.get('tool', '?'))} on server {_text(call.get('server', '?'))}", width
    )
    principal = _text(call.get("principal", "?"))
    if context.get("acting_for"):
        principal += f", acting for {_text(context['acting_for'])}"
    lines += _field("principal", principal, width)
    if context.get("source_ip"):
        lines += _field("source", _text(context["source_ip"]), width)
    if call.get("session_id"):
        lines += _field("session", _text(call["session_id"]), width)
    extra = context.get("extra")
    if isinstance(extra, Mapping) and extra:
        # One field for all of them: a key must not be able to pose as one of our labels.
        facts = "; ".join(
            f"{_text(key)}={_text(value)}"
            for key, value in sorted(extra.items(), key=lambda kv: str(kv[0]))
        )
        lines += _field("context", facts, width)
    labels = ", ".join(_text(label) for label in request.labels) or "none"
    lines += _field("class", f"{_text(request.privilege)} (labels: {labels})", width)
    rule = f" (rule {_text(request.rule_id)})" if request.rule_id else " (policy defaults)"
    lines += _field("why held", f"{_text(request.reason) or 'no reason given'}{rule}", width)
    lines += _field("requires", _requirement(request.approval, request.reauth), width)
    lines += _field("may grant", _grants(request.approval), width)
    if request.votes:
        lines += _field("votes", _votes(request), width)
    if request.status != "pending":
        lines += _field("status", render_status(request), width)
    lines += _arguments(call.get("args", {}), arg_limit, hash_text, full_hint)
    lines += _field("call hash", hash_text, width)
    at = datetime.fromtimestamp(request.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines += _field("expires", f"{time_left(request, now)} (at {at})", width)
    return "\n".join(lines)


def render_status(request: ApprovalRequest) -> str:
    """One line saying how a request ended (or that it is still pending)."""
    by = ", ".join(_text(name) for name in request.decided_by)
    match request.status:
        case "approved" | "consumed":
            return f"approved by {by or 'approvers'}: the call may run"
        case "denied":
            reasons = [_text(v.reason) for v in request.votes if not v.approve and v.reason]
            why = f": {reasons[-1]}" if reasons else ""
            return f"denied by {by or 'an approver'}{why}: nothing ran"
        case "expired":
            return "expired: nothing ran"
        case "cancelled":
            return "cancelled: nothing ran"
        case _:
            return f"pending ({len(request.votes)} of {request.approval.quorum} votes so far)"
