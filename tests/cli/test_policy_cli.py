"""`agentguard policy check|explain|schema` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentguard.cli import app

SCENARIOS = str(Path(__file__).resolve().parents[2] / "examples" / "policies" / "scenarios.yaml")
runner = CliRunner()


def test_check_ok() -> None:
    result = runner.invoke(app, ["policy", "check", SCENARIOS])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output and "read < write < destructive < privileged" in result.output


def test_check_reports_file_rule_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("rules:\n  - {id: deploys, match: {tool: deploy}, step_up: "
                   "[{when: change_windw, require: approve}]}\n")
    result = runner.invoke(app, ["policy", "check", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output and "deploys" in result.output
    assert "unknown signal 'change_windw'" in result.output


def test_explain_names_signals_rule_and_requirement() -> None:
    call = {"tool": "deploy", "args": {"env": "production"}, "principal": "svc:deploy-bot",
            "source_ip": "192.0.2.7"}
    # A Saturday: outside the Tue-Thu change window.
    result = runner.invoke(app, ["policy", "explain", SCENARIOS, "--call", json.dumps(call),
                                 "--at", "2026-11-28T12:00:00+00:00", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rule"] == "prod-deploy"
    assert out["signals"] == {"outside_change_window": True, "unknown_network": True}
    assert out["requirement"] == "approve+reauth"
    inside = dict(call, source_ip="10.20.3.4")
    result = runner.invoke(app, ["policy", "explain", SCENARIOS, "--call", json.dumps(inside),
                                 "--at", "2026-12-01T10:00:00+00:00"])
    assert result.exit_code == 0, result.output
    assert "decision:    allow" in result.output
    assert "signal:      outside_change_window = quiet" in result.output


def test_explain_rejects_ambiguous_json() -> None:
    result = runner.invoke(app, ["policy", "explain", SCENARIOS, "--call",
                                 '{"tool": "x", "tool": "y"}'])
    assert result.exit_code == 2 and "duplicate key" in result.output


def test_schema_is_json() -> None:
    result = runner.invoke(app, ["policy", "schema"])
    assert result.exit_code == 0
    assert "rules" in json.loads(result.output)["properties"]


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "policy", "approvals", "grants", "reauth", "audit"):
        assert command in result.output


def test_check_warns_about_approval_without_approvers(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("defaults: {unknown_tool: allow}\n"
                      "rules: [{id: wipe, match: {tool: wipe}, require: approve}]\n")
    result = runner.invoke(app, ["policy", "check", str(policy)])
    assert result.exit_code == 0
    assert "rules[wipe]: approval without approvers" in result.output
    assert "unknown_tool is allow" in result.output
    clean = runner.invoke(app, ["policy", "check", SCENARIOS])
    assert "warning" not in clean.output


OPS_POLICY = str(Path(__file__).resolve().parents[2] / "examples" / "proxy" / "ops-policy.yaml")


def explain_json(policy: str, tool: str, path: object) -> dict:
    call = {"tool": tool, "args": {"path": path}, "principal": "agent:x",
            "source_ip": "10.20.0.5"}
    result = runner.invoke(app, ["policy", "explain", policy, "--call", json.dumps(call),
                                 "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_explain_sees_every_spelling_of_a_prod_path_as_prod() -> None:
    for policy, tool in ((SCENARIOS, "secrets.read"), (OPS_POLICY, "read_secret")):
        for spelling in ("staging/../prod/db", "prod//db", "./prod/db", "prod\\db",
                         "/prod/db", "PROD/db"):
            out = explain_json(policy, tool, spelling)
            assert (out["rule"], out["class"]) == ("prod-secrets", "privileged"), spelling
            assert out["decision"] == "require_approval", spelling
        assert explain_json(policy, tool, "staging/db")["rule"] == "other-secrets"


def test_explain_refuses_a_path_that_climbs_above_its_root() -> None:
    for policy, tool in ((SCENARIOS, "secrets.read"), (OPS_POLICY, "read_secret")):
        out = explain_json(policy, tool, "../prod/db")
        assert out["decision"] == "deny" and out["requirement"] == "deny"
        assert out["rule"] == "prod-secrets"
        assert "argument 'path'" in out["reason"] and "climbs above its root" in out["reason"]
    call = {"tool": "read_secret", "args": {"path": 42}}
    result = runner.invoke(app, ["policy", "explain", OPS_POLICY, "--call", json.dumps(call)])
    assert result.exit_code == 0, result.output
    assert "decision:    deny: refused: rule 'prod-secrets' cannot read argument 'path': " \
        "it is not a string (got a number)" in result.output


def test_check_names_rule_and_field_of_a_bad_path_pattern(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("rules:\n  - {id: secrets, match: {tool: read, args: "
                   "{path: {path: \"prod/\", case: insensitive}}}}\n")
    result = runner.invoke(app, ["policy", "check", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output and "rule 'secrets'" in result.output
    assert "field 'match.args'" in result.output and "write 'prod'" in result.output


def _explain_at(moment: str):
    call = {"tool": "deploy", "args": {"env": "production"}, "principal": "svc:deploy-bot"}
    return runner.invoke(app, ["policy", "explain", SCENARIOS, "--call", json.dumps(call),
                               "--at", moment])


@pytest.mark.parametrize("moment", [
    "0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00-05:00", "9999-12-31T23:59:59+00:00",
    "9999-12-31T23:59:59-23:59",
])
def test_explain_at_calendar_edges_is_a_clear_error(moment: str) -> None:
    result = _explain_at(moment)
    assert result.exit_code == 2, result.output
    assert "outside the supported range" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("moment", "why"), [
    ("2026-02-30T00:00:00+00:00", "day is out of range"),
    ("2026-12-01T10:00:00", "needs a timezone offset"),
])
def test_explain_at_bad_dates_name_the_problem(moment: str, why: str) -> None:
    result = _explain_at(moment)
    assert result.exit_code == 2 and why in result.output, result.output


def test_explain_at_the_first_and_last_supported_days_works() -> None:
    for moment in ("0002-01-01T00:00:00+00:00", "9998-12-31T23:59:59+00:00"):
        result = _explain_at(moment)
        assert result.exit_code == 0, result.output


def test_explain_evaluates_a_window_crossing_midnight(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "signals:\n"
        "  night_window: {schedule: {tz: Europe/London, days: [mon], hours: '22:00-02:00'}}\n"
        "rules:\n"
        "  - {id: deploys, match: {tool: deploy}, require: allow,\n"
        "     step_up: [{when: night_window, require: approve}]}\n")
    call = json.dumps({"tool": "deploy"})
    fired = {}
    for moment in ("2026-11-30T21:59:00+00:00", "2026-12-01T01:59:00+00:00",
                   "2026-12-01T02:00:00+00:00"):
        result = runner.invoke(app, ["policy", "explain", str(policy), "--call", call,
                                     "--at", moment, "--json"])
        assert result.exit_code == 0, result.output
        fired[moment] = json.loads(result.output)["signals"]["night_window"]
    assert fired == {"2026-11-30T21:59:00+00:00": False, "2026-12-01T01:59:00+00:00": True,
                     "2026-12-01T02:00:00+00:00": False}


def _explain(policy: str, call: dict, *extra: str):
    return runner.invoke(app, ["policy", "explain", policy, "--call", json.dumps(call), *extra])


def test_explain_shows_who_may_approve_quorum_and_separation() -> None:
    result = _explain(SCENARIOS, {"tool": "iam.update_policy"}, "--json")
    assert result.exit_code == 0, result.output
    approval = json.loads(result.output)["approval"]
    assert approval["approvers"] == ["group:security"]
    assert approval["groups"] == {"security": ["carol", "dave", "erin"]}
    assert approval["quorum"] == 2 and approval["separation_of_duties"] is True
    assert approval["assurance"] == "any" and approval["grant_allowed"] is False
    text = _explain(SCENARIOS, {"tool": "iam.update_policy"}).output
    assert "quorum:      2 approvals from 2 different approvers" in text
    assert "separation:  the principal and the human it acts for may not approve" in text
    assert "grant:       none: each approval is for this one call" in text
    assert "approvers:   group:security (" in text


def test_explain_shows_grants_assurance_and_reauth(tmp_path: Path) -> None:
    (tmp_path / "trust.yaml").write_text("approvers: []\n")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "trust: trust.yaml\n"
        "groups: {ops: [alice, bob]}\n"
        "rules:\n"
        "  - {id: deploys, match: {tool: deploy}, require: approve+reauth, approvers: [group:ops,"
        " carol], max_grant: 30m, assurance: signed, reauth: {method: totp, max_age: 15m}}\n")
    result = _explain(str(policy), {"tool": "deploy"}, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["approval"]["groups"] == {"ops": ["alice", "bob"]}
    assert out["approval"]["max_grant"] == 1800 and out["approval"]["grant_allowed"] is True
    assert out["approval"]["assurance"] == "signed"
    assert out["reauth"] == {"method": "totp", "subject": "approver", "max_age": 900.0,
                             "acr_values": []}
    text = _explain(str(policy), {"tool": "deploy"}).output
    assert "approvers:   group:ops (alice, bob), carol" in text
    assert "grant:       an approver may approve for up to 30m" in text
    assert "assurance:   signed" in text
    assert "reauth:      totp by the approver, a verification within 15m is reused" in text


def test_explain_of_an_allowed_call_has_no_approval() -> None:
    result = _explain(SCENARIOS, {"tool": "list_services"}, "--json")
    out = json.loads(result.output)
    assert out["decision"] == "allow" and out["approval"] is None and out["reauth"] is None


def test_explain_says_when_rules_name_the_tool_but_not_these_arguments() -> None:
    result = _explain(SCENARIOS, {"tool": "deploy", "args": {"env": "qa"}}, "--json")
    because = json.loads(result.output)["classified_because"]
    assert because.startswith("no rule matches these arguments of 'deploy'")
    assert "'prod-deploy'" in because
    other = _explain(SCENARIOS, {"tool": "no_such_tool"}, "--json")
    assert json.loads(other.output)["classified_because"] == "no rule covers this tool"


def test_explain_of_a_reauth_only_rule_names_who_reauthenticates(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - {id: keys, match: {tool: rotate}, require: reauth}\n")
    result = _explain(str(policy), {"tool": "rotate"})
    assert result.exit_code == 0, result.output
    assert "reauth:      totp by the principal" in result.output
    assert "approvers:" not in result.output and "quorum:" not in result.output
    allowed = _explain(SCENARIOS, {"tool": "list_services"})
    assert "reauth:" not in allowed.output and "approvers:" not in allowed.output
