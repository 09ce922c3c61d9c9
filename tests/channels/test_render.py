"""render_request: what a human approver reads (console, CLI, Slack)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Any

import pytest

from agentguard.canonical import call_hash, call_to_dict
from agentguard.channels.render import render_request, render_status
from agentguard.sanitize import render_args
from agentguard.types import (
    ApprovalRequest,
    ApprovalSpec,
    ApprovalVote,
    Principal,
    ReauthSpec,
    ToolCall,
)

NOW = 1_700_000_000.0


def make_request(
    *,
    tool: str = "deploy",
    server: str = "git",
    args: dict[str, Any] | None = None,
    principal: str = "agent:deploy-bot",
    context: dict[str, Any] | None = None,
    reason: str = "outside the change window",
    **fields: Any,
) -> ApprovalRequest:
    call = ToolCall(
        tool=tool,
        server=server,
        args=args if args is not None else {"env": "production"},
        principal=Principal(principal),
        session_id="sess-1",
    )
    data: dict[str, Any] = call_to_dict(call)
    if context is not None:
        data["context"] = context
    values: dict[str, Any] = {
        "id": "req-abc",
        "call": data,
        "call_hash": call_hash(call),
        "created_at": NOW,
        "expires_at": NOW + 300,
        "rule_id": "prod-deploy",
        "reason": reason,
        "privilege": "privileged",
        "labels": ("deploy", "secret"),
        "approval": ApprovalSpec(approvers=("group:oncall",), max_grant=900),
    }
    values.update(fields)
    return ApprovalRequest(**values)


def unsafe_chars(text: str) -> set[str]:
    """Characters that could restyle, reorder or hide text (newline is ours)."""
    return {
        ch
        for ch in text
        if ch != "\n" and unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    }


def test_shows_who_what_why_and_requirement() -> None:
    request = make_request(
        context={"source_ip": "10.9.8.7", "acting_for": "alice", "extra": {"ticket": "CHG-42"}},
        approval=ApprovalSpec(
            approvers=("group:security", "bob"),
            quorum=2,
            separation_of_duties=True,
            max_grant=900,
        ),
        reauth=ReauthSpec(method="totp", max_age=900, subject="approver"),
    )
    text = render_request(request, width=300, now=NOW)
    assert "req-abc" in text
    assert "deploy on server git" in text
    assert "agent:deploy-bot, acting for alice" in text
    assert "10.9.8.7" in text
    assert "ticket=CHG-42" in text
    assert "privileged (labels: deploy, secret)" in text
    assert "outside the change window (rule prod-deploy)" in text
    assert "2 approvals by group:security, bob" in text
    assert "may not approve" in text
    assert "totp re-authentication by the approver, fresh within 15m" in text
    assert "approve for up to 15m" in text
    assert f"call hash   sha256:{request.call_hash}" in text
    assert '"env": "production"' in text
    assert "5m left" in text
    assert "2023-11-14 22:18:20 UTC" in text  # expires_at, absolute
    assert "\x1b" not in text


def test_single_use_and_open_approver_set_are_said_plainly() -> None:
    text = render_request(make_request(approval=ApprovalSpec(), rule_id=None), now=NOW)
    assert "approval by anyone the channel verifies" in text
    assert "this call only (single use)" in text
    assert "(policy defaults)" in text


def test_missing_call_keys_render_without_error() -> None:
    request = replace(make_request(), call={"context": "not-a-mapping"})
    text = render_request(request, now=NOW)
    assert "? on server ?" in text
    assert "arguments" in text


def test_time_left_and_expired() -> None:
    request = make_request()
    assert "4m10s left" in render_request(request, now=NOW + 50)
    assert "expires     expired" in render_request(request, now=NOW + 300)


PAYLOAD = "ok\x1b[31mRED\x1b]0;title\x07\u202eevil\u200bhidden\nfake line"


@pytest.mark.parametrize("where", ["tool", "server", "principal", "reason", "args", "approver"])
def test_every_untrusted_string_is_escaped(where: str) -> None:
    kwargs: dict[str, Any] = {}
    if where == "args":
        kwargs["args"] = {"cmd": PAYLOAD}
    elif where == "approver":
        kwargs["approval"] = ApprovalSpec(approvers=(PAYLOAD,))
    else:
        kwargs[where] = PAYLOAD
    text = render_request(make_request(**kwargs), now=NOW)
    assert unsafe_chars(text) == set()
    assert "\\x1b[31mRED" in text
    assert "\\u202eevil\\u200bhidden" in text
    assert not any(line.startswith("fake line") for line in text.splitlines())


def test_context_and_votes_are_escaped() -> None:
    request = make_request(
        context={"acting_for": PAYLOAD, "source_ip": PAYLOAD, "extra": {PAYLOAD: PAYLOAD}},
        votes=(
            ApprovalVote(approver=PAYLOAD, approve=False, at=NOW, channel="cli", reason=PAYLOAD),
        ),
    )
    text = render_request(request, now=NOW)
    assert unsafe_chars(text) == set()
    assert text.count("\\u202eevil") >= 5


def test_long_arguments_are_truncated_with_counts_and_hash() -> None:
    args = {"blob": "x" * 5000}
    full, _ = render_args(args, limit=10**9)
    request = make_request(args=args)
    text = render_request(request, now=NOW)
    assert (
        f"truncated: showing 2000 of {len(full)} characters; "
        f"full call hash sha256:{request.call_hash}"
    ) in text
    assert "x" * 1980 in text
    assert "x" * 2001 not in text
    assert len(text) < 3000


def test_short_arguments_are_not_marked_truncated() -> None:
    assert "truncated" not in render_request(make_request(), now=NOW)


@pytest.mark.parametrize("limit", range(10, 24))
def test_truncation_never_splits_an_escape(limit: int) -> None:
    request = make_request(args={"k": "\u202e" * 100})
    text = render_request(request, arg_limit=limit, now=NOW)
    body = text.split("characters; full call hash", 1)[1].split("\n", 1)[1]
    shown = body.split(" ...", 1)[0]
    assert re.fullmatch(r'\s*\{\s*"k": "(\\u202e)*', shown), shown
    match = re.search(r"showing (\d+) of", text)
    assert match is not None
    assert int(match.group(1)) <= limit


def test_descriptive_lines_wrap_at_width() -> None:
    reason = " ".join(["signal-fired"] * 40)
    text = render_request(make_request(reason=reason), width=60, now=NOW)
    why = [line for line in text.splitlines() if "signal-fired" in line]
    assert len(why) > 3
    assert all(len(line) <= 60 for line in why)


@pytest.mark.parametrize(
    ("status", "votes", "decided_by", "expected"),
    [
        ("approved", (), ("alice",), "approved by alice: the call may run"),
        (
            "denied",
            (ApprovalVote("bob", False, NOW, "cli", "not now"),),
            ("bob",),
            "denied by bob: not now: nothing ran",
        ),
        ("expired", (), (), "expired: nothing ran"),
        ("cancelled", (), (), "cancelled: nothing ran"),
        ("pending", (ApprovalVote("bob", True, NOW, "cli"),), (), "pending (1 of 1 votes"),
    ],
)
def test_render_status(
    status: str, votes: tuple[ApprovalVote, ...], decided_by: tuple[str, ...], expected: str
) -> None:
    request = make_request(status=status, votes=votes, decided_by=decided_by)
    assert render_status(request).startswith(expected)
    if status != "pending":
        assert expected in render_request(request, now=NOW)
