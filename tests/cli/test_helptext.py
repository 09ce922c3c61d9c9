"""Help names every value: `approve ID`, `--store URL`, never `<str>` or `<bool>`."""

from __future__ import annotations

import re

import click
import typer
from click.testing import CliRunner

from agentguard.cli.app import app
from agentguard.cli.helptext import name_metavars

TYPE_LABEL = re.compile(r"<(?:str|bool|int|float|list\[[a-z]+\]|path|file|Path)>")


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_no_help_shows_a_python_type_name() -> None:
    root = name_metavars(typer.main.get_command(app))
    runner = CliRunner()
    checked = 0
    for path in _commands(root):
        result = runner.invoke(root, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        assert not TYPE_LABEL.search(result.output), (path, result.output)
        checked += 1
    assert checked > 25


def test_positional_arguments_have_names() -> None:
    root = name_metavars(typer.main.get_command(app))
    runner = CliRunner()
    approve = runner.invoke(root, ["approvals", "approve", "--help"]).output
    assert "approvals approve [OPTIONS] ID\n" in approve
    assert re.search(r"^  ID\s+The request's id", approve, re.M)
    pins = runner.invoke(root, ["pins", "approve", "--help"]).output
    assert "[OPTIONS] SERVER TOOL HASH" in pins
    verify = runner.invoke(root, ["audit", "verify", "--help"]).output
    assert "[OPTIONS] [PATH]" in verify


def test_the_proxy_names_its_relay_switch_once() -> None:
    """``--no-relay`` is documented; the old ``--no-fast-path`` still works but is not shown
    (tests/proxy/test_relay.py runs a route with it)."""
    root = name_metavars(typer.main.get_command(app))
    shown = CliRunner().invoke(root, ["proxy", "--help"], terminal_width=200).output
    assert "--no-relay" in shown
    assert "fast-path" not in shown and "fast path" not in shown
