"""Classification and pure evaluation: rule order, argument operators, hints, step-ups."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard.engine import evaluate, signals_needed
from agentguard.policy import Policy, load_policy
from agentguard.types import CallContext, Principal, ToolCall, ToolHints

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "policies" / "scenarios.yaml"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SCENARIOS)


def decide(policy: Policy, call: ToolCall, **signals: bool):
    classified = policy.classify(call)
    return evaluate(policy.model, classified, signals)


def test_routine_read_is_allowed(policy: Policy) -> None:
    result = decide(policy, ToolCall(tool="list_services", args={}))
    assert result.decision.kind == "allow"
    assert result.decision.rule_id == "routine-reads"


def test_prod_deploy_steps_up_by_signal(policy: Policy) -> None:
    call = ToolCall(tool="deploy", args={"env": "production"})
    assert signals_needed(policy.classify(call)) == [
        "outside_change_window", "unknown_network", "outside_change_window", "unknown_network"]
    quiet = decide(policy, call, outside_change_window=False, unknown_network=False)
    assert quiet.decision.kind == "allow"
    window = decide(policy, call, outside_change_window=True, unknown_network=False)
    assert window.decision.kind == "require_approval"
    assert window.decision.reauth is None
    assert window.fired == ("outside_change_window",)
    both = decide(policy, call, outside_change_window=True, unknown_network=True)
    assert both.decision.kind == "require_approval"
    assert both.decision.reauth is not None and both.decision.reauth.subject == "approver"
    assert set(both.fired) == {"outside_change_window", "unknown_network"}
    assert "approve+reauth" in both.decision.reason


def test_staging_deploy_is_allowed(policy: Policy) -> None:
    assert decide(policy, ToolCall(tool="deploy", args={"env": "staging"})).decision.kind == \
        "allow"


def test_glob_on_argument_path(policy: Policy) -> None:
    prod = decide(policy, ToolCall(tool="secrets.read", args={"path": "prod/db/password"}))
    assert prod.decision.rule_id == "prod-secrets"
    assert prod.decision.kind == "require_approval"
    dev = decide(policy, ToolCall(tool="secrets.read", args={"path": "dev/db"}))
    assert dev.decision.rule_id == "other-secrets"
    assert dev.decision.kind == "allow"
    assert "secret" in dev.decision.classification.labels


def test_two_person_rule_with_separation_of_duties(policy: Policy) -> None:
    d = decide(policy, ToolCall(tool="iam.update_policy", args={})).decision
    assert d.kind == "require_approval"
    assert d.approval.quorum == 2
    assert d.approval.separation_of_duties
    assert policy.approver_identities(d.approval.approvers) == {"carol", "dave", "erin"}


def test_unknown_tool_gets_the_default(policy: Policy) -> None:
    d = decide(policy, ToolCall(tool="format_disk", args={})).decision
    assert d.kind == "require_approval"
    assert d.classification.privilege == "unknown"
    assert "unknown tool" in d.reason


def test_first_match_wins_and_boolean_is_not_integer(policy: Policy) -> None:
    admin = decide(policy, ToolCall(tool="reset_password",
                                    args={"user": "root", "user_is_admin": True}))
    assert admin.decision.rule_id == "admin-password-reset"
    one = decide(policy, ToolCall(tool="reset_password", args={"user": "x", "user_is_admin": 1}))
    assert one.decision.rule_id == "password-reset"
    assert one.decision.kind == "require_reauth"


OPERATORS = """
rules:
  - id: big-transfer
    match: {tool: transfer, args: {amount: {gt: 1000}, "to.country": {not_in: [GB, IE]}}}
    class: privileged
  - id: regex
    match: {tool: run, args: {cmd: {regex: "^rm\\\\s"}}}
    require: deny
  - id: membership
    match: {tool: run, args: {cmd: {in: [ls, pwd]}}}
    class: read
  - id: principal-claims
    match: {tool: report, principal: {kind: service, claims: {team: {eq: finance}}}}
    class: read
"""


@pytest.mark.parametrize(
    ("tool", "args", "principal", "rule"),
    [
        ("transfer", {"amount": 5000, "to": {"country": "FR"}}, None, "big-transfer"),
        ("transfer", {"amount": 5000, "to": {"country": "GB"}}, None, None),
        ("transfer", {"amount": 10, "to": {"country": "FR"}}, None, None),
        ("transfer", {"amount": "5000", "to": {"country": "FR"}}, None, "big-transfer"),
        ("run", {"cmd": "rm -rf /"}, None, "regex"),
        ("run", {"cmd": "ls"}, None, "membership"),
        ("report", {}, Principal("svc:books", "service", {"team": "finance"}), "principal-claims"),
        ("report", {}, Principal("svc:books", "service", {"team": "sales"}), None),
    ],
)
def test_argument_and_principal_operators(tool, args, principal, rule) -> None:
    policy = Policy.from_yaml(OPERATORS)
    call = ToolCall(tool=tool, args=args, principal=principal or Principal("agent:x"))
    assert policy.classify(call).classification.rule_id == rule


HINTS = """
servers:
  trusted-srv: {trust: trusted}
  "*": {trust: untrusted}
rules:
  - id: lister
    match: {tool: list_things}
    class: read
"""


def test_annotations_raise_but_never_lower() -> None:
    policy = Policy.from_yaml(HINTS)
    destructive = ToolHints(read_only=False, destructive=True)
    read_only = ToolHints(read_only=True)
    # A rule says read; a destructive hint raises it.
    raised = policy.classify(ToolCall(tool="list_things", args={}, server="x", hints=destructive))
    assert raised.classification.privilege == "destructive"
    assert evaluate(policy.model, raised, {}).decision.kind == "require_approval"
    # readOnlyHint from an untrusted server cannot turn an unknown tool into a read.
    lying = policy.classify(ToolCall(tool="wipe", args={}, server="evil", hints=read_only))
    assert evaluate(policy.model, lying, {}).decision.kind == "require_approval"
    # From a trusted server the hint is believed for a tool no rule covers.
    honest = policy.classify(ToolCall(tool="peek", args={}, server="trusted-srv",
                                      hints=read_only))
    assert evaluate(policy.model, honest, {}).decision.kind == "allow"


def test_unpinned_tool_reason_is_recorded() -> None:
    policy = Policy.from_yaml(HINTS)
    c = policy.classify(ToolCall(tool="list_things", args={}, server="s",
                                 hints=ToolHints(unpinned=True)))
    assert "appeared after" in c.classification.reason


def test_static_allow_cache_only_for_unconditional_tools(policy: Policy) -> None:
    assert policy.static_allow("local", "list_services", ToolHints())
    assert not policy.static_allow("local", "deploy", ToolHints())  # arguments decide
    assert not policy.static_allow("local", "secrets.read", ToolHints())
    assert not policy.static_allow("local", "never_heard_of_it", ToolHints())


def test_shadow_mode_disables_the_fast_path() -> None:
    policy = Policy.from_yaml("mode: shadow\nrules: [{id: r, match: {tool: t}, class: read}]")
    assert not policy.static_allow("local", "t", ToolHints())


def test_context_is_not_needed_for_pure_evaluation(policy: Policy) -> None:
    call = ToolCall(tool="deploy", args={"env": "production"},
                    context=CallContext(source_ip="10.20.0.5"))
    result = decide(policy, call)  # no signals given: none fired
    assert result.decision.kind == "allow"


def test_a_tool_that_appeared_after_pinning_gets_the_unknown_default() -> None:
    policy = Policy.from_yaml(HINTS)
    hints = ToolHints(read_only=True, unpinned=True)
    new = policy.classify(ToolCall(tool="peek", args={}, server="trusted-srv", hints=hints))
    decision = evaluate(policy.model, new, {}).decision
    assert decision.kind == "require_approval"
    assert "pinned" in decision.reason


def test_rules_on_hints_never_trust_an_untrusted_servers_claims() -> None:
    policy = Policy.from_yaml(HINTS.replace(
        "rules:\n", "rules:\n  - {id: ro, match: {hints: {read_only: true}}, class: read}\n"))
    claims = ToolHints(read_only=True)
    untrusted = policy.classify(ToolCall(tool="wipe", args={}, server="evil", hints=claims))
    assert untrusted.classification.rule_id is None
    assert evaluate(policy.model, untrusted, {}).decision.kind == "require_approval"
    trusted = policy.classify(ToolCall(tool="peek", args={}, server="trusted-srv", hints=claims))
    assert trusted.classification.rule_id == "ro"


def test_reason_names_rules_that_name_the_tool_when_none_matches(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "rules:\n"
        "  - {id: prod, match: {tool: deploy, args: {env: production}}, class: write}\n"
        "  - {id: bots, match: {tool: restart, principal: {kind: service}}, class: write}\n")
    policy = load_policy(path)
    by_args = policy.classify(ToolCall(tool="deploy", args={"env": "qa"})).classification
    assert by_args.reason == "no rule matches these arguments of 'deploy' (rules naming it: 'prod')"
    by_principal = policy.classify(ToolCall(tool="restart", args={})).classification
    assert by_principal.reason == ("no rule matches this call (arguments, principal, labels or "
                                   "annotations) of 'restart' (rules naming it: 'bots')")
    unnamed = policy.classify(ToolCall(tool="drop_db", args={})).classification
    assert unnamed.reason == "no rule covers this tool" and unnamed.privilege == "unknown"


def test_decision_says_no_rule_matches_the_arguments_not_unknown_tool(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "defaults: {unknown_tool: approve}\n"
        "rules:\n"
        "  - {id: prod, match: {tool: deploy, args: {env: production}}, class: write}\n")
    policy = load_policy(path)
    held = decide(policy, ToolCall(tool="deploy", args={"env": "qa"})).decision
    assert held.kind == "require_approval" and held.rule_id is None
    assert "no rule matches these arguments of 'deploy'" in held.reason
    assert "unknown-tool default approve" in held.reason and "unknown tool:" not in held.reason
    unnamed = decide(policy, ToolCall(tool="drop_db", args={})).decision
    assert unnamed.kind == "require_approval"
    assert "unknown tool: default approve" in unnamed.reason
