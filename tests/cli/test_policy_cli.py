"""`agentguard policy check|explain|schema` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

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
