"""``agentguard audit tail|verify``."""

from __future__ import annotations

from typing import Annotated

import typer

from agentguard.cli.runtime import fail
from agentguard.settings import audit_path

__all__ = ["app"]

app = typer.Typer(help="Read and verify the tamper-evident audit log.", no_args_is_help=True)
PathArg = Annotated[str | None, typer.Argument(help="Audit log (default: $AGENTGUARD_AUDIT or "
                    "~/.agentguard/audit.jsonl).")]


@app.command()
def tail(
    path: PathArg = None,
    n: Annotated[int, typer.Option("-n", help="How many recent events.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")]
    = False,
) -> None:
    """Print recent audit events, one escaped line each."""
    from agentguard.audit import format_event
    from agentguard.audit import tail as tail_events

    target = audit_path(path)
    if not target.exists():
        raise fail(f"no audit log at {target}")
    try:
        for event in tail_events(target, n=n, follow=follow):
            typer.echo(format_event(event))
    except KeyboardInterrupt:
        pass


@app.command()
def verify(path: PathArg = None) -> None:
    """Check the hash chain; exit 1 if any record was edited, deleted, reordered or cut."""
    from agentguard.audit import verify_log

    target = audit_path(path)
    if not target.exists():
        raise fail(f"no audit log at {target}")
    report = verify_log(target)
    if report.ok:
        typer.echo(f"ok: {report.records} record(s), chain intact")
        return
    for problem in report.problems:
        typer.secho(f"seq {problem.seq} line {problem.line}: {problem.kind}: {problem.detail}",
                    fg="red", err=True)
    typer.secho(f"FAILED: {len(report.problems)} problem(s) in {report.records} record(s)",
                fg="red", err=True)
    raise typer.Exit(1)
