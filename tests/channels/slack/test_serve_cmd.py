"""`agentguard serve`: refuses to start half-configured, and says which variable is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentguard.cli.serve_cmd import register


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("AGENTGUARD_HOME", str(tmp_path))
    for name in ("BOT_TOKEN", "SIGNING_SECRET", "APP_TOKEN", "CHANNEL", "CONFIG", "API_URL"):
        monkeypatch.delenv(f"AGENTGUARD_SLACK_{name}", raising=False)
    monkeypatch.delenv("AGENTGUARD_WEBHOOK_SECRET", raising=False)
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so `serve` is a subcommand as in the real CLI
        """Placeholder."""

    return app


def run(app: typer.Typer, *args: str, tmp: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", "--store", f"sqlite:///{tmp / 's.db'}",
                                      "--audit", str(tmp / "audit.jsonl"), "--port", "0",
                                      *args])
    return result.exit_code, result.output


def test_serve_needs_something_to_serve(cli: typer.Typer, tmp_path: Path) -> None:
    code, output = run(cli, tmp=tmp_path)
    assert code == 2 and "--slack, --socket-mode, --webhook" in output


@pytest.mark.parametrize(("flag", "missing"), [
    ("--slack", "AGENTGUARD_SLACK_BOT_TOKEN, AGENTGUARD_SLACK_SIGNING_SECRET"),
    ("--webhook", "AGENTGUARD_WEBHOOK_SECRET"),
])
def test_serve_refuses_to_start_without_its_secrets(
    cli: typer.Typer, tmp_path: Path, flag: str, missing: str,
) -> None:
    code, output = run(cli, flag, tmp=tmp_path)
    assert code == 2 and missing in output


def test_socket_mode_needs_the_app_token(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTGUARD_SLACK_BOT_TOKEN", "xoxb-1")
    code, output = run(cli, "--socket-mode", tmp=tmp_path)
    assert code == 2 and "AGENTGUARD_SLACK_APP_TOKEN" in output


def test_serve_help_lists_the_endpoints(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "/slack/interactions" in result.output and "/webhook/callback" in result.output
