"""``agentguard audit report``: who was challenged for what, outcomes and approval latency."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agentguard.cli.runtime import EXIT_FAILED, fail, not_found, say
from agentguard.settings import audit_path

__all__ = ["report"]


def report(
    path: Annotated[str | None, typer.Argument(
        help="Audit log: a JSONL file or a postgresql:// URL (?schema=NAME) "
        "(default: $AGENTGUARD_AUDIT or ~/.agentguard/audit.jsonl).")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Also draw the charts to this file: .png, .svg, or .html (one "
        "self-contained page with the tables and inline SVG charts). Needs matplotlib.")]
    = None,
    top: Annotated[int, typer.Option(
        help="Rows per table; the rest are summed into one line.", min=1)] = 15,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the summary as JSON instead of tables.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check the hash chain first (default: on).")] = True,
) -> None:
    """Summarise the audit log: who was challenged for what, outcomes, shadow mode, latency.

    Prints tables: an overview (period, calls, whether the hash chain is intact); who was
    interrupted and for what (principal, the human it acts for, tool, rule, signals that
    fired, outcomes, who decided); interruptions by rule, tool and privilege class with a
    column per outcome (approved, denied, expired, unreachable, reauth_failed, edited);
    shadow mode: per rule, how many calls would have been challenged had the policy been
    enforced; approval latency (min, median, p90, max from hold to decision) per outcome;
    and abnormal-rate (signal.burst) events per principal.

    Exit status: 0; 1 when the hash chain is broken (the report is still printed, but its
    numbers may be wrong), the log is missing or cannot be read, or the chart cannot be
    written; 2 for a chart file type other than .png, .svg or .html.
    """
    from agentguard.audit.report import load_report, render_tables, write_chart
    from agentguard.cli.runtime import wide_console
    from agentguard.errors import AgentGuardError

    target = audit_path(path)
    if not isinstance(target, str) and not target.exists():
        raise not_found(f"no audit log at {target}")
    try:
        summary = load_report(target, verify=verify)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        render_tables(summary, wide_console(), top=top)
    if out is not None:
        try:
            written = write_chart(summary, out)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        except (OSError, AgentGuardError) as exc:
            raise fail(str(exc), EXIT_FAILED) from exc
        typer.echo(f"chart written to {written}", err=as_json)
    if summary.chain is not None and not summary.chain.ok:
        say(f"warning: the audit chain is broken ({len(summary.chain.problems)} "
            "problem(s)); run `agentguard audit verify`", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
