"""Block Kit rendering: everything the approver needs, and nothing Slack would interpret."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.canonical import call_hash, call_to_dict
from agentguard.channels.slack.blocks import (
    ACTION_APPROVE,
    ACTION_APPROVE_FOR,
    ACTION_DENY,
    ACTION_VIEW,
    approval_route,
    fallback_text,
    mrkdwn_escape,
    outcome_blocks,
    parse_action_value,
    request_blocks,
)
from agentguard.sanitize import render_args, unescape
from agentguard.types import (
    ApprovalRequest,
    ApprovalSpec,
    ApprovalVote,
    CallContext,
    Principal,
    ToolCall,
    new_request_id,
)
from tests.channels.slack.fake_slack import all_text, block_problems, buttons

NOW = 1_700_000_000.0
INJECTIONS = {
    "mention": "<!channel> and <!here> and <@U0ADMIN> and <!subteam^S0SEC>",
    "link": "<https://evil.example/steal|click here, it's ok>",
    "fence": "```\n*bold* <!channel>\n``` `x` ``",
    "controls": "red\x1b[31m rtl\u202egnp.exe zw\u200bsp null\x00 nl\nline",
    "entity": "&lt;!channel&gt; &amp;",
}


def make_request(args: dict[str, Any] | None = None, **fields: Any) -> ApprovalRequest:
    call = ToolCall(tool=fields.pop("tool", "deploy"), args=args or {"env": "production"},
                    principal=Principal("agent:deploy-bot"),
                    context=CallContext(acting_for="slack:UCAROL", source_ip="10.1.2.3",
                                        extra={"ticket": "OPS-1"}))
    data = call_to_dict(call) | {"context": {"acting_for": "slack:UCAROL",
                                             "source_ip": "10.1.2.3",
                                             "extra": {"ticket": "OPS-1"}}}
    base = dict(
        id=new_request_id(), call=data, call_hash=call_hash(call), created_at=NOW,
        expires_at=NOW + 300, rule_id="prod-deploy",
        reason="rule 'prod-deploy' (class write, labels deploy): not_change_window requires "
               "approve -> approve",
        privilege="write", labels=("deploy",),
        approval=ApprovalSpec(approvers=("slack:UALICE", "slack:UBOB"), max_grant=900))
    base.update(fields)
    return ApprovalRequest(**base)


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    out = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return out


def code_block(blocks: list[dict[str, Any]]) -> str:
    (text,) = [t for t in mrkdwn_texts(blocks) if t.startswith("*Arguments*")]
    _head, fence1, rest = text.partition("```\n")
    body, fence2, tail = rest.rpartition("\n```")
    assert fence1 and fence2 and tail == ""
    return body


def test_message_shows_who_what_why_and_the_buttons() -> None:
    request = make_request()
    blocks = request_blocks(request, now=NOW)
    assert block_problems(blocks) == []
    text = all_text(blocks)
    for expected in ("deploy on server local", "agent:deploy-bot, acting for slack:UCAROL",
                     "write (labels: deploy)", "rule prod-deploy", "not_change_window",
                     "1 approval by slack:UALICE, slack:UBOB", "5m left", request.id,
                     "10.1.2.3", "ticket=OPS-1", request.call_hash, '"env": "production"'):
        assert expected in text, expected
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [(e["action_id"], e["value"]) for e in actions] == [
        (ACTION_APPROVE, request.id), (ACTION_APPROVE_FOR, f"{request.id}:900"),
        (ACTION_DENY, request.id)]
    assert actions[1]["text"]["text"] == "Approve for 15m…"
    assert approval_route(request) == "message"


def test_no_grant_button_when_the_rule_allows_single_use_only() -> None:
    request = make_request(approval=ApprovalSpec(approvers=("slack:UALICE",)))
    actions = [b for b in request_blocks(request, now=NOW) if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == [ACTION_APPROVE, ACTION_DENY]


def test_untrusted_text_is_plain_text_without_emoji_and_only_arguments_are_mrkdwn() -> None:
    request = make_request(dict(INJECTIONS), tool="<!channel>:fire:", reason="<@U0ADMIN> *b*")
    blocks = request_blocks(request, now=NOW)
    assert block_problems(blocks) == []
    mrkdwn = mrkdwn_texts(blocks)
    assert len(mrkdwn) == 1 and mrkdwn[0].startswith("*Arguments*")

    def plain(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "plain_text" else []
            return found + [x for v in node.values() for x in plain(v)]
        return [x for v in node for x in plain(v)] if isinstance(node, list) else []

    assert all(p["emoji"] is False for p in plain(blocks))
    header = blocks[0]["text"]
    assert header == {"type": "plain_text", "text": "Approval needed: <!channel>:fire:",
                      "emoji": False}


def test_injection_payloads_in_arguments_are_inert() -> None:
    blocks = request_blocks(make_request(dict(INJECTIONS)), now=NOW)
    (text,) = [t for t in mrkdwn_texts(blocks) if t.startswith("*Arguments*")]
    # No markup can form: no raw angle brackets, and & only starts our own entities.
    assert "<" not in text and ">" not in text
    assert re.findall(r"&(?!amp;|lt;|gt;)", text) == []
    # Exactly our two fences; backticks in values are shown as \x60.
    assert text.count("```") == 2 and code_block(blocks).count("`") == 0
    code = code_block(blocks)
    assert "&lt;!channel&gt;" in code and "&lt;https://evil.example/steal|click here" in code
    assert "\\x60\\x60\\x60" in code
    assert "\\x1b[31m" in code and "\\u202e" in code and "\\u200b" in code and "\\x0a" in code
    # The literal entity text survives as text, not as a decoded bracket.
    assert "&amp;lt;!channel&amp;gt;" in code
    text_obj = next(b for b in blocks if b["type"] == "section" and "text" in b
                and b["text"]["type"] == "mrkdwn")["text"]
    assert text_obj["verbatim"] is True


def test_what_the_approver_reads_decodes_to_exactly_what_runs() -> None:
    args = dict(INJECTIONS)
    blocks = request_blocks(make_request(args), now=NOW)
    shown = html.unescape(code_block(blocks)).replace("\\x60", "`")
    # Slack decodes the entities; our escapes undo exactly: the shown text is render_args'.
    assert shown == render_args(args, limit=2**62)[0].replace("\\x60", "`")
    values = re.findall(r'"((?:[^"\\]|\\.)*)"', shown)
    assert unescape(values[1]) == args[sorted(args)[0]]


def test_long_values_are_cut_with_the_full_call_hash_and_other_arguments_stay_visible() -> None:
    request = make_request({"blob": "A" * 5000, "target": "prod-db", "more": "<!channel>"})
    blocks = request_blocks(request, now=NOW)
    assert block_problems(blocks) == []
    (text,) = [t for t in mrkdwn_texts(blocks) if t.startswith("*Arguments*")]
    assert f"truncated — full call hash sha256:{request.call_hash}" in text
    assert "[truncated: 5,000 characters]" in text and "A" * 5000 not in text
    assert '"target": "prod-db"' in text and "&lt;!channel&gt;" in text
    # What nobody could read here cannot be approved here: the review modal decides.
    assert approval_route(request) == "modal"
    assert buttons({"params": {"blocks": blocks}}) == {ACTION_VIEW: request.id,
                                                       ACTION_DENY: request.id}
    assert "cannot be approved from here" in all_text(blocks)


def test_many_arguments_are_cut_as_a_whole_within_slacks_limits() -> None:
    args = {f"key{i:03d}": "<&>" * 90 for i in range(300)}
    request = make_request(args)
    for blocks in (request_blocks(request, now=NOW),
                   outcome_blocks(replace(request, status="expired"), now=NOW + 400)):
        assert block_problems(blocks) == []
        (text,) = [t for t in mrkdwn_texts(blocks) if t.startswith("*Arguments*")]
        assert "the rest of the arguments truncated" in text and request.call_hash in text
        assert re.findall(r"&(?!amp;|lt;|gt;)", text) == []
    # Too large even for a modal: Slack offers no approval and says where to read it all.
    assert approval_route(request) == "elsewhere"
    blocks = request_blocks(request, now=NOW)
    assert buttons({"params": {"blocks": blocks}}) == {ACTION_DENY: request.id}
    assert f"agentguard approvals show {request.id} --full" in all_text(blocks)


def test_outcome_message_says_who_when_and_keeps_no_buttons() -> None:
    vote = ApprovalVote("slack:UALICE", True, NOW + 30, "slack", grant_ttl=900)
    request = make_request(status="approved", votes=(vote,), decided_by=("slack:UALICE",),
                           decided_at=NOW + 30)
    blocks = outcome_blocks(request, now=NOW + 31)
    assert block_problems(blocks) == []
    assert all(b["type"] != "actions" for b in blocks)
    text = all_text(blocks)
    assert "Approved by slack:UALICE at 2023-11-14 22:13:50 UTC (and for 15m)" in text
    assert blocks[-1]["elements"][0]["text"] == "decided by <@UALICE>"


def test_only_validated_slack_ids_become_mentions() -> None:
    request = make_request(status="denied", decided_by=("<!channel>", "slack:<!here>", "bob"),
                           decided_at=NOW + 5,
                           votes=(ApprovalVote("<!channel>", False, NOW + 5, "cli",
                                               reason="<https://x|y>"),))
    blocks = outcome_blocks(request, now=NOW + 6)
    assert mrkdwn_texts(blocks) == [mrkdwn_texts(blocks)[0]]  # only the arguments
    assert "Denied by <!channel>, slack:<!here>, bob" in all_text(blocks)


def test_expired_and_unreachable_outcomes() -> None:
    expired = outcome_blocks(make_request(status="expired"), now=NOW + 400)
    assert "Expired at 2023-11-14 22:18:20 UTC" in all_text(expired)
    gone = outcome_blocks(make_request(status="cancelled", decided_at=NOW + 1), now=NOW + 2)
    assert "Unreachable" in all_text(gone)


def test_fallback_text_is_escaped() -> None:
    text = fallback_text(make_request(tool="<!channel>"))
    assert text == "agentguard: approval needed for &lt;!channel&gt; on local"
    assert mrkdwn_escape("a<b>&\u202e") == "a&lt;b&gt;&amp;\\u202e"


def test_button_values_are_parsed_strictly() -> None:
    rid = new_request_id()
    assert parse_action_value(ACTION_APPROVE, rid) == (rid, 0.0)
    assert parse_action_value(ACTION_APPROVE_FOR, f"{rid}:900") == (rid, 900.0)
    for action, value in [(ACTION_APPROVE, f"{rid}:900"), (ACTION_APPROVE_FOR, rid),
                          (ACTION_APPROVE_FOR, f"{rid}:-5"), (ACTION_APPROVE_FOR, f"{rid}:1e9"),
                          (ACTION_DENY, "short"), (ACTION_DENY, "../../x" * 4)]:
        assert parse_action_value(action, value) is None, value


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=20),
                       st.text(max_size=400) | st.integers(-(2**53) + 1, 2**53 - 1),
                       max_size=8))
def test_no_argument_text_can_form_slack_markup(args: dict[str, Any]) -> None:
    blocks = request_blocks(make_request(args or {"x": 1}), now=NOW)
    assert block_problems(blocks) == []
    (text,) = [t for t in mrkdwn_texts(blocks) if t.startswith("*Arguments*")]
    assert "<" not in text and ">" not in text and text.count("```") == 2
    assert re.findall(r"&(?!amp;|lt;|gt;)", text) == []
    assert "`" not in code_block(blocks)
