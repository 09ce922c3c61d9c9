"""The ``agentguard`` command line."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentguard.cli import (
    approvals_cmd,
    approvers_cmd,
    audit_cmd,
    grants_cmd,
    policy_cmd,
    reauth_cmd,
    report_cmd,
)
from agentguard.cli.helptext import name_arguments
from agentguard.cli.runtime import EXIT_CODES_HELP, EXIT_OK

if TYPE_CHECKING:
    from agentguard.channels.base import ApprovalChannel

__all__ = ["app", "main"]

app = typer.Typer(
    help="agentguard: step-up authentication for AI-agent tool calls.\n\n"
    "Routine calls pass; risky ones are held until a human approves or re-authenticates. "
    "Start with `agentguard demo`.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from agentguard import __version__

        typer.echo(f"agentguard {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Options that apply before any command."""
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(approvals_cmd.app, name="approvals")
app.add_typer(approvers_cmd.app, name="approvers")
app.add_typer(grants_cmd.app, name="grants")
app.add_typer(reauth_cmd.app, name="reauth")
audit_cmd.app.command("report")(report_cmd.report)
app.add_typer(audit_cmd.app, name="audit")


@app.command()
def demo(
    answer: Annotated[str, typer.Option(
        help="Who answers held calls: 'console' (you, on this terminal), or a scripted "
        "'approve' / 'deny' (for CI and screenshots).")] = "console",
    home: Annotated[str | None, typer.Option(
        help="Directory for the demo's SQLite store and audit log (default: a new temp dir).")]
    = None,
) -> None:
    """Run a scripted agent through the guard on embedded defaults (SQLite, console)."""
    import anyio

    from agentguard.channels.scripted import ScriptedChannel
    from agentguard.demo import run_demo

    channels: list[ApprovalChannel]
    if answer == "console":
        from agentguard.channels.console import ConsoleChannel

        channels = [ConsoleChannel()]
    elif answer in ("approve", "deny"):
        channels = [ScriptedChannel([ScriptedChannel.vote("demo-approver",
                                                          answer == "approve")], delay=0.5)]
    else:
        raise typer.BadParameter("use console, approve or deny", param_hint="--answer")
    base = Path(home) if home else Path(tempfile.mkdtemp(prefix="agentguard-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    anyio.run(lambda: run_demo(channels=channels, store_path=base / "demo.db",
                               audit_path=base / "audit.jsonl"))


def _register_optional() -> None:
    # Commands of the proxy and the approval endpoints register themselves; each module keeps
    # its heavy imports inside the command so `agentguard --help` stays fast.
    import importlib

    for name in ("proxy_cmd", "serve_cmd"):
        try:
            module = importlib.import_module(f"agentguard.cli.{name}")
        except ImportError:
            continue
        module.register(app)


_register_optional()
name_arguments(app)


def main() -> None:
    """Console-script entry point."""
    from agentguard.cli.helptext import name_metavars

    name_metavars(typer.main.get_command(app))()
