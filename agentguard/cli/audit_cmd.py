"""``agentguard audit tail|verify``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agentguard.cli.runtime import EXIT_FAILED, echo_json, fail, not_found, say
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
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line (JSON Lines): each record as logged.")]
    = False,
) -> None:
    """Print recent audit events, one escaped line each."""
    from agentguard.audit import format_event
    from agentguard.audit import tail as tail_events
    from agentguard.errors import AgentGuardError

    target = audit_path(path)
    if not target.exists():
        raise not_found(f"no audit log at {target}")
    try:
        for event in tail_events(target, n=n, follow=follow):
            # ensure_ascii: control and bidi characters arrive escaped, as in the text form.
            typer.echo(json.dumps(event, sort_keys=True, ensure_ascii=True,
                                  separators=(",", ":")) if as_json else format_event(event))
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    except KeyboardInterrupt:
        pass


def _anchor(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    digest = digest.strip().lower()
    if not sep or not seq.strip().isdigit() or len(digest) != 64 or digest.strip(
            "0123456789abcdef"):
        raise fail(f"--expect {text!r}: write SEQ:HASH, e.g. 1042:{'0' * 64}")
    return int(seq), digest


@app.command()
def verify(
    path: PathArg = None,
    expect: Annotated[list[str] | None, typer.Option(
        "--expect", metavar="SEQ:HASH", help="A record noted outside the log (from an earlier "
        "verify, kept elsewhere) that must still be there with that hash; repeatable. Catches "
        "a tail cut together with the head file, or a wiped log.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"ok", "path", "records", "last_seq", "last_hash", "problems"} '
        "on stdout (the exit status is the same).")] = False,
) -> None:
    """Check the hash chain; exit 1 if any record was edited, deleted, reordered or cut.

    On success it prints the last record as SEQ:HASH: keep that somewhere the agent cannot
    write, and pass it back with --expect next time.
    """
    from agentguard.audit import verify_log

    target = audit_path(path)
    anchors = dict(_anchor(text) for text in expect or ())
    if not target.exists():
        if anchors:
            gone = (f"the audit log {target} is gone, and records {sorted(anchors)} were "
                    "expected in it")
            if as_json:
                echo_json({"ok": False, "path": str(target), "records": 0, "last_seq": None,
                           "last_hash": None, "problems": [{
                               "seq": None, "line": None, "kind": "missing", "detail": gone,
                               "severity": "error"}]})
            say(f"FAILED: {gone}", fg="red", err=True)
            raise typer.Exit(EXIT_FAILED)
        raise not_found(f"no audit log at {target}")
    report = verify_log(target, expect=anchors)
    if as_json:
        echo_json({
            "ok": report.ok, "path": str(target), "records": report.records,
            "last_seq": report.last_seq, "last_hash": report.last_hash,
            "problems": [{"seq": p.seq, "line": p.line, "kind": p.kind, "detail": p.detail,
                          "severity": p.severity} for p in report.problems],
        })
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)
        return
    if report.ok:
        typer.echo(f"ok: {report.records} record(s), chain intact; last "
                   f"{report.last_seq}:{report.last_hash}")
        return
    for problem in report.problems:
        say(f"seq {problem.seq} line {problem.line}: {problem.kind}: {problem.detail}",
            fg="red", err=True)
    say(f"FAILED: {len(report.problems)} problem(s) in {report.records} record(s)",
        fg="red", err=True)
    raise typer.Exit(EXIT_FAILED)
