"""An application's own request for approval (the Agents SDK's ``needs_approval``) raises a
call to approval at least; it never lowers what the policy asks."""

from __future__ import annotations

from agentguard.engine import evaluate
from agentguard.policy import Policy
from agentguard.types import RequireApproval, ToolCall, ToolHints

POLICY = """
version: 1
defaults: {approvers: [alice]}
classes:
  read: {require: allow}
  privileged: {require: approve+reauth, approvers: [bob], reauth: {method: totp}}
rules:
  - {id: reads, match: {tool: peek}, class: read}
  - {id: secrets, match: {tool: secret}, class: privileged}
  - {id: drops, match: {tool: drop}, require: deny}
"""


def decide(tool: str, asked: bool):
    policy = Policy.from_yaml(POLICY)
    call = ToolCall(tool=tool, args={}, hints=ToolHints(requires_approval=asked))
    return evaluate(policy.model, policy.classify(call), {}).decision


def test_an_allowed_call_the_application_asks_about_needs_an_approver() -> None:
    assert decide("peek", False).kind == "allow"
    asked = decide("peek", True)
    assert isinstance(asked, RequireApproval)
    assert asked.approval.approvers == ("alice",) and asked.rule_id == "reads"
    assert "needs_approval" in asked.reason
    policy = Policy.from_yaml(POLICY)
    assert policy.static_allow("local", "peek", ToolHints())
    assert not policy.static_allow("local", "peek", ToolHints(requires_approval=True))


def test_it_never_lowers_the_policy() -> None:
    secret = decide("secret", True)
    assert isinstance(secret, RequireApproval) and secret.reauth is not None
    assert "needs_approval" not in secret.reason
    assert decide("drop", True).kind == "deny"
