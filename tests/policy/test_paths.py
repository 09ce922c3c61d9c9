"""The ``path`` operator: one spelling per path before globs match, refusals that never fall
through, and policy-file errors that name the file, rule and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.engine import evaluate
from agentguard.errors import PolicyError
from agentguard.policy import Policy, load_policy
from agentguard.policy.paths import UnsafePath, normalise_path
from agentguard.types import Principal, ToolCall

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "policies" / "scenarios.yaml"
OPS = ROOT / "examples" / "proxy" / "ops-policy.yaml"
PROXY_TESTS = ROOT / "tests" / "proxy" / "policy.yaml"

#: Spellings of prod/db a tool opens as prod/db (backslash: as an upstream on Windows does).
PROD_SPELLINGS = ["prod/db", "staging/../prod/db", "prod//db", "./prod/db", "prod/./db",
                  "prod/db/", "prod\\db", ".\\prod\\db", "/prod/db", "//prod/db",
                  "staging/x/../../prod/db", "PROD/db", "Prod/DB", "prod", "prod/"]
#: Spellings that climb above their root: refused, never "not prod".
CLIMBING = ["../prod/db", "../x", "a/../../x", "/../etc", "prod/../../etc", "..\\prod\\db",
            "staging/../../prod/db", ".."]
NOT_PROD = ["dev/db", "staging/prod/db", "production/db", "prodx", "prod/../dev/db", "", ".",
            "/"]


def shipped(path: Path) -> Policy:
    # The proxy tests' policy is a template: its fixtures fill in the timeout.
    return Policy.from_yaml(path.read_text().replace("TIMEOUT", "5s"), str(path))


def decide(policy: Policy, tool: str, **args: Any):
    call = ToolCall(tool=tool, args=args, principal=Principal("agent:x"))
    return evaluate(policy.model, policy.classify(call), {}).decision


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("prod/db", "prod/db"), ("staging/../prod/db", "prod/db"), ("prod//db", "prod/db"),
        ("./prod/db", "prod/db"), ("prod/db/", "prod/db"), ("prod/./db/.", "prod/db"),
        ("prod\\db", "prod/db"), ("/prod/db", "/prod/db"), ("//prod///db//", "/prod/db"),
        ("\\\\server\\share", "/server/share"), ("a/..", "."), ("", "."), (".", "."),
        ("/", "/"), ("/a/..", "/"), ("a/b/../../c", "c"), ("...", "..."), ("..a/b..", "..a/b.."),
    ],
)
def test_normalise_path(raw: str, normal: str) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize("raw", [*CLIMBING, "/..", "a/../..", "\\..\\x"])
def test_normalise_refuses_climbing_above_the_root(raw: str) -> None:
    with pytest.raises(UnsafePath, match="climbs above its root"):
        normalise_path(raw)


def test_normalise_refuses_nul() -> None:
    with pytest.raises(UnsafePath, match="NUL"):
        normalise_path("prod/db\x00.txt")


_SEGMENT = st.text(st.sampled_from("ab.\\/\x00 P"), max_size=4)
_NAME = st.text(st.sampled_from("abP-_ "), min_size=1, max_size=3).filter(
    lambda s: s not in (".", ".."))


@given(st.lists(_SEGMENT, max_size=8).map("/".join))
def test_normal_form_has_no_dot_segments_empty_segments_or_backslashes(raw: str) -> None:
    try:
        normal = normalise_path(raw)
    except UnsafePath:
        return
    assert normalise_path(normal) == normal
    assert "\\" not in normal and "\x00" not in normal
    body = normal.removeprefix("/")
    if body not in ("", "."):
        assert all(seg not in ("", ".", "..") for seg in body.split("/")), normal
    assert not normal.endswith("/") or normal == "/"


@given(st.lists(_NAME, min_size=1, max_size=5), st.booleans(), st.data())
def test_every_spelling_of_a_path_normalises_to_it(
    names: list[str], rooted: bool, data: st.DataObject,
) -> None:
    """Insert `.`, empty segments, `x/..` detours and backslashes anywhere: same path."""
    canonical = ("/" if rooted else "") + "/".join(names)
    parts: list[str] = []
    for name in names:
        # An empty first segment would make a relative path absolute.
        detours = [".", "zz/.."] if not parts and not rooted else [".", "", "zz/.."]
        parts.extend(data.draw(st.lists(st.sampled_from(detours), max_size=2)))
        parts.append(name)
    parts.extend(data.draw(st.lists(st.sampled_from([".", ""]), max_size=2)))
    spelled = ("/" if rooted else "") + "/".join(parts)
    if data.draw(st.booleans()):
        spelled = spelled.replace("/", "\\")
    assert normalise_path(spelled) == canonical


@pytest.mark.parametrize("path", [SCENARIOS, OPS, PROXY_TESTS], ids=lambda p: p.parent.name)
def test_shipped_policies_classify_every_spelling_of_prod_as_prod(path: Path) -> None:
    policy = shipped(path)
    tool = "secrets.read" if path == SCENARIOS else "read_secret"
    wrong = {}
    for spelling in PROD_SPELLINGS:
        d = decide(policy, tool, path=spelling)
        if d.rule_id != "prod-secrets" or d.classification.privilege != "privileged":
            wrong[spelling] = (d.rule_id, d.kind)
    for spelling in NOT_PROD:
        d = decide(policy, tool, path=spelling)
        if d.rule_id != "other-secrets":
            wrong[spelling] = (d.rule_id, d.kind)
    assert not wrong


@pytest.mark.parametrize("path", [SCENARIOS, OPS, PROXY_TESTS], ids=lambda p: p.parent.name)
def test_shipped_policies_refuse_paths_that_climb_or_are_not_strings(path: Path) -> None:
    policy = shipped(path)
    tool = "secrets.read" if path == SCENARIOS else "read_secret"
    for value in [*CLIMBING, "prod/db\x00", 7, None, True, ["prod/db"], {"p": "prod"}]:
        d = decide(policy, tool, path=value)
        assert d.kind == "deny", value
        assert d.rule_id == "prod-secrets"
        assert "argument 'path'" in d.reason
        why = ("climbs above its root" if isinstance(value, str) and "\x00" not in value
               else "NUL" if isinstance(value, str) else "is not a string")
        assert why in d.reason, (value, d.reason)


def test_high_value_secret_names_are_matched_as_paths() -> None:
    policy = load_policy(SCENARIOS)
    for name in ["hv/api-key", "./hv/api-key", "HV\\api-key", "x/../hv/api-key", "hv/"]:
        assert decide(policy, "view_secret", name=name).rule_id == "view-high-value-secret", name
    assert decide(policy, "view_secret", name="../hv/x").kind == "deny"


RULES = """
rules:
  - {id: tmp, match: {tool: delete, args: {target.file: {path: "/tmp/**"}}}, class: write}
  - {id: prod, match: {tool: read, args: {p: {path: "prod/**"}}}, class: privileged}
  - {id: folded, match: {tool: fold, args: {p: {path: [Prod, "Prod/**"], case: insensitive}}},
     class: privileged}
  - {id: both, match: {tool: both, args: {p: {path: "a/*", ne: "a/public"}}}, class: privileged}
  - {id: anything, match: {tool: [delete, read, fold, both]}, class: read}
"""


@pytest.fixture(scope="module")
def rules() -> Policy:
    return Policy.from_yaml(RULES)


def test_absolute_pattern_matches_absolute_paths_only(rules: Policy) -> None:
    for path in ["/tmp/x", "/tmp//x/", "/var/../tmp/x", "\\tmp\\x"]:
        assert decide(rules, "delete", target={"file": path}).rule_id == "tmp", path
    # A relative tmp/x resolves against a directory the policy cannot know.
    for path in ["tmp/x", "/tmp/../etc/passwd", "/tmp", "/tmp/", "/tmpx"]:
        assert decide(rules, "delete", target={"file": path}).rule_id == "anything", path


def test_relative_pattern_matches_from_the_root_either_way(rules: Policy) -> None:
    for path in ["prod/db", "/prod/db", "/x/../prod/db"]:
        assert decide(rules, "read", p=path).rule_id == "prod", path
    # Case-sensitive unless the rule says otherwise; `prod/**` is what is under prod.
    for path in ["PROD/db", "prod", "x/prod/db"]:
        assert decide(rules, "read", p=path).rule_id == "anything", path


def test_case_insensitive_folds_both_sides(rules: Policy) -> None:
    for path in ["prod", "PROD/db", "pRoD\\Db", "/prod/x"]:
        assert decide(rules, "fold", p=path).rule_id == "folded", path


def test_other_operators_still_see_the_raw_value(rules: Policy) -> None:
    assert decide(rules, "both", p="a/secret").rule_id == "both"
    assert decide(rules, "both", p="a/public").rule_id == "anything"
    # ne reads the raw string: a/./public is not "a/public", and under a/ it is.
    assert decide(rules, "both", p="a/./public").rule_id == "both"


def test_refusal_never_falls_through_to_a_later_rule(rules: Policy) -> None:
    d = decide(rules, "delete", target={"file": "/tmp/../../etc/passwd"})
    assert d.kind == "deny" and d.rule_id == "tmp"
    assert d.reason == ("refused: rule 'tmp' cannot read argument 'target.file': it climbs "
                        "above its root ('..' past the start)")
    classified = rules.classify(ToolCall(tool="read", args={"p": 3}))
    assert classified.refusal is not None and classified.rule is None
    assert classified.classification.privilege == "unknown"
    assert evaluate(rules.model, classified, {}).requirement.deny


def test_missing_argument_does_not_match(rules: Policy) -> None:
    assert decide(rules, "read").rule_id == "anything"
    assert decide(rules, "delete", target={}).rule_id == "anything"


def test_only_a_rule_that_is_reached_reads_the_path() -> None:
    policy = Policy.from_yaml("""
rules:
  - {id: admins, match: {tool: read, principal: {id: "admin:*"}}, class: write}
  - {id: prod, match: {tool: read, args: {p: {path: "prod/**"}}}, class: privileged}
""")
    call = ToolCall(tool="read", args={"p": "../x"}, principal=Principal("admin:root"))
    assert evaluate(policy.model, policy.classify(call), {}).decision.rule_id == "admins"
    assert decide(policy, "read", p="../x").kind == "deny"


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ('{path: "prod/"}', "write 'prod'"),
        ('{path: "./prod/**"}', "write 'prod/**'"),
        ('{path: "prod//db"}', "write 'prod/db'"),
        ('{path: "prod\\\\db"}', "write 'prod/db'"),
        ('{path: "a/../b"}', "write 'b'"),
        ('{path: "../x"}', "climbs above its root"),
        ('{path: ""}', "cannot be empty"),
        ("{path: []}", "at least one pattern"),
        ("{path: 3}", "valid string"),
        ('{path: "prod/**", case: maybe}', "args.p.case"),
        ('{glob: "prod/**", case: insensitive}', "'case' goes with 'path'"),
        ('{path: "prod/**", casing: insensitive}', "unknown operator(s) ['casing']"),
    ],
)
def test_bad_path_condition_names_file_rule_and_field(
    tmp_path: Path, condition: str, fragment: str,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"rules: [{{id: r1, match: {{tool: x, args: {{p: {condition}}}}}}}]\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    err = info.value
    assert err.file == str(bad) and err.rule == "r1" and err.field == "match.args"
    assert fragment in str(err)


def test_path_operator_is_refused_on_claims() -> None:
    with pytest.raises(PolicyError, match="path operator reads call arguments"):
        Policy.from_yaml(
            "rules: [{id: r1, match: {tool: x, principal: {claims: {home: {path: a}}}}}]")


def test_a_bad_path_is_refused_whatever_the_other_conditions_say() -> None:
    """The path is checked first: key order never decides between deny and fall-through."""
    for args in ('{env: production, p: {path: "prod/**"}}',
                 '{p: {path: "prod/**"}, env: production}',
                 '{p: {ne: "x", path: "prod/**"}}', '{p: {eq: "y", path: "prod/**"}}'):
        policy = Policy.from_yaml(f"""
rules:
  - {{id: prod, match: {{tool: read, args: {args}}}, class: privileged}}
  - {{id: reads, match: {{tool: read}}, class: read}}
""")
        refused = decide(policy, "read", env="staging", p="../prod/db")
        assert (refused.kind, refused.rule_id) == ("deny", "prod"), args
        assert decide(policy, "read", env="staging", p="x").rule_id == "reads", args
