"""``agentguard proxy ...`` runs a command line with only the proxy's commands built: it
must parse, help and refuse exactly as the full command line does."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agentguard.cli import app
from agentguard.cli.proxy_cmd import main_app


@pytest.mark.parametrize("args", [
    ["proxy", "--help"],
    ["proxy", "--bogus"],
    ["proxy", "--policy"],
    ["proxy", "--upstream-url", "http://127.0.0.1:9/mcp", "--", "python", "x.py"],
    ["proxy"],
])
def test_the_proxy_only_command_line_answers_as_the_full_one(args: list[str]) -> None:
    runner = CliRunner()
    full = runner.invoke(app, args, prog_name="agentguard")
    alone = runner.invoke(main_app(), args, prog_name="agentguard")
    assert (alone.exit_code, alone.output) == (full.exit_code, full.output)
