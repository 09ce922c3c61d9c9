"""Policy files: validation errors name the file, the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard.errors import PolicyError
from agentguard.policy import Policy, load_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def test_every_example_policy_loads() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files
    for path in files:
        load_policy(path)


@pytest.mark.parametrize(
    ("text", "rule", "field", "fragment"),
    [
        ("rules: [{id: r1, match: {tool: x}, class: superuser}]", "r1", None, "unknown class"),
        ("rules: [{id: r1, match: {tool: x}, require: maybe}]", "r1", "require",
         "unknown requirement"),
        ("rules: [{id: r1, match: {tool: x, args: {n: {gt: many}}}}]", "r1", "match.args",
         "needs a number"),
        ("rules: [{id: r1, match: {tool: x, args: {p: {regex: '('}}}}]", "r1", "match.args",
         "invalid regex"),
        ("rules: [{id: r1, match: {tool: x}, step_up: [{when: nope, require: approve}]}]",
         None, None, "unknown signal 'nope'"),
        ("rules: [{id: r1, match: {tool: x}, timeout: soon}]", "r1", "timeout", "duration"),
        ("rules: [{id: r1, match: {tool: x}, colour: red}]", "r1", "colour", "Extra inputs"),
        ("signals: {w: {schedule: {tz: Mars/Olympus}}}", None, "signals.w.schedule.tz",
         "unknown timezone"),
        ("signals: {n: {cidr: [10.0.0.0/33]}}", None, "signals.n", "invalid network"),
        ("defaults: {on_timeout: allow}", None, "defaults.on_timeout", "deny"),
        ("rules: [{id: r1, match: {tool: x}, approvers: [group:ghosts]}]", None, None,
         "unknown group"),
    ],
)
def test_bad_policy_names_rule_and_field(
    tmp_path: Path, text: str, rule: str | None, field: str | None, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert err.file == str(path)
    assert str(path) in str(err)
    if rule is not None:
        assert err.rule == rule
    if field is not None:
        assert err.field is not None and err.field.startswith(field)
    assert fragment in str(err)


def test_duplicate_yaml_keys_are_rejected() -> None:
    with pytest.raises(PolicyError, match="duplicate key"):
        Policy.from_yaml("mode: enforce\nmode: shadow\n", "dup.yaml")


def test_duplicate_rule_ids_are_rejected() -> None:
    with pytest.raises(PolicyError, match="duplicate rule id"):
        Policy.from_yaml("rules: [{id: a, match: {tool: x}}, {id: a, match: {tool: y}}]")


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.yaml")


def test_json_schema_describes_rules() -> None:
    schema = Policy.json_schema()
    assert "rules" in schema["properties"]
    assert "RuleSpec" in schema["$defs"]


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000,
                                    "".join(f"\n{'  ' * i}k:" for i in range(3000)) + " x"])
def test_a_policy_nested_past_any_sane_depth_is_refused_not_a_crash(nested: str) -> None:
    """Deep flow or block nesting (libyaml's parser caps it; the pure-Python one recursed)
    is a PolicyError, never a RecursionError or a hung start."""
    with pytest.raises(PolicyError):
        Policy.from_yaml("version: 1\nrules: " + nested + "\n", "deep.yaml")
