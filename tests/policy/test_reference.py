"""The policy reference is generated from the model: every field appears, and the committed
docs/policy-reference.md and README table are what the model says today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agentguard.cli import app
from agentguard.policy.model import PolicyModel
from agentguard.policy.reference import reference_rows, render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_fields_that_change_behaviour_are_listed() -> None:
    paths = {row[0] for row in reference_rows()}
    for field in ("defaults.pending_per_class", "defaults.request_rate",
                  "defaults.request_rate.per", "defaults.max_args_bytes", "rules[].redact",
                  "rules[].match.args", "classes.NAME.assurance", "classes.NAME.reauth.max_age",
                  "signals.NAME.schedule.hours", "servers.NAME.trust", "trust", "mode"):
        assert field in paths, field


def test_every_top_level_and_defaults_field_is_listed_with_a_meaning() -> None:
    rows = {row[0]: row for row in reference_rows()}
    for name, info in PolicyModel.model_fields.items():
        assert (info.alias or name) in rows
    for name in PolicyModel.model_fields["defaults"].annotation.model_fields:
        assert rows[f"defaults.{name}"][3], name


def test_defaults_are_shown_as_a_policy_writes_them() -> None:
    rows = {row[0]: row for row in reference_rows()}
    assert rows["defaults.timeout"][1:3] == ("duration", "`5m`")
    assert rows["defaults.request_rate"][2] == "max: `20`, per: `10m`"
    assert rows["defaults.max_args_bytes"][2] == "`1048576` (1 MiB)"
    assert rows["rules[].id"][2] == "required"


def test_committed_reference_matches_the_model() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_policy_reference.py"),
                            "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    page = (ROOT / "docs" / "policy-reference.md").read_text()
    assert page.endswith(render_reference())
    assert render_reference() in (ROOT / "README.md").read_text()


def test_cli_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["policy", "reference"])
    assert result.exit_code == 0
    assert result.output == render_reference()
