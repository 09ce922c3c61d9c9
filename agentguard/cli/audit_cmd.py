"""``agentguard audit tail|verify|rotate|reset|checkpoint``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from agentguard.cli.runtime import EXIT_FAILED, echo_json, fail, not_found, say
from agentguard.settings import audit_path

__all__ = ["app"]

app = typer.Typer(help="Read and verify the tamper-evident audit log.", no_args_is_help=True)
PathArg = Annotated[str | None, typer.Argument(help="Audit log: a JSONL file, or for tail and "
                    "verify a postgresql:// URL (?schema=NAME) (default: $AGENTGUARD_AUDIT or "
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
    if isinstance(target, str):
        events = _postgres_tail(target, n, follow)
    elif not target.exists():
        raise not_found(f"no audit log at {target}")
    else:
        events = tail_events(target, n=n, follow=follow)
    try:
        for event in events:
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


TrustOpt = Annotated[str | None, typer.Option(
    "--trust", envvar="AGENTGUARD_TRUST", help="Trust file: also re-check every approval's "
    "signed receipt and every signed checkpoint against it [env: AGENTGUARD_TRUST].")]
PolicyOpt = Annotated[str | None, typer.Option(
    "--policy", help="Use the trust file this policy names (instead of --trust).")]


def _anchors(trust: str | None, policy: str | None):
    """The trust anchors from --trust, or from the policy's ``trust:`` (None if neither)."""
    from agentguard.errors import AgentGuardError
    from agentguard.trust import TrustAnchors

    anchors: TrustAnchors | None
    try:
        if trust:
            anchors = TrustAnchors.load(trust)
        elif policy:
            from agentguard.policy import load_policy

            anchors = load_policy(policy).trust
            if anchors is None:
                raise fail(f"the policy {policy} names no trust file", EXIT_FAILED)
        else:
            return None
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    for warning in anchors.warnings:
        say(f"warning: {warning}", err=True, fg="yellow")
    return anchors


def _jsonl(path: str | None) -> Path:
    target = audit_path(path)
    if isinstance(target, str):
        raise fail("this command works on a JSONL log; a PostgreSQL log is one table, never "
                   "rotated or reset by agentguard")
    return target


def _postgres_tail(url: str, n: int, follow: bool) -> Iterator[dict[str, Any]]:
    """The last ``n`` records of a PostgreSQL log, then (``follow``) new ones as they come."""
    import time

    from agentguard.audit._url import split_audit_url
    from agentguard.audit.postgres import read_postgres_events

    dsn, schema = split_audit_url(url)
    seen = 0
    for event in read_postgres_events(dsn, schema=schema, last=n):
        seen = event["seq"]
        yield event
    while follow:
        time.sleep(1.0)
        for event in read_postgres_events(dsn, schema=schema, since_seq=seen):
            seen = event["seq"]
            yield event


def _verify_postgres(url: str, anchors: dict[int, str], trusted: object,
                     checkpoints: list[str] | None, as_json: bool) -> None:
    from agentguard.audit._url import split_audit_url
    from agentguard.audit.postgres import verify_postgres_log
    from agentguard.errors import AgentGuardError

    if anchors or trusted is not None or checkpoints:
        raise fail("--expect, --trust, --policy and --checkpoints read JSONL logs only; "
                   "a PostgreSQL log is checked for its chain and head row")
    dsn, schema = split_audit_url(url)
    try:
        report = verify_postgres_log(dsn, schema=schema)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    _show_report(report, f"postgresql schema {schema}", False, as_json)


@app.command()
def verify(
    path: PathArg = None,
    expect: Annotated[list[str] | None, typer.Option(
        "--expect", metavar="SEQ:HASH", help="A record noted outside the log (from an earlier "
        "verify, kept elsewhere) that must still be there with that hash; repeatable. Catches "
        "a tail cut together with the head file, or a wiped log.")] = None,
    trust: TrustOpt = None,
    policy: PolicyOpt = None,
    checkpoints: Annotated[list[str] | None, typer.Option(
        "--checkpoints", metavar="FILE", help="Signed checkpoints kept outside the log "
        "(`audit checkpoint --out`); each must verify with a service key of the trust file "
        "and name a record still in the log. Needs --trust or --policy; repeatable.")] = None,
    allow_unsigned: Annotated[bool, typer.Option(
        "--allow-unsigned", help="With a trust file, report an approval that carries no "
        "signed receipt (console, grants) as a warning instead of a failure.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"ok", "path", "records", "last_seq", "last_hash", "problems"} '
        "on stdout (the exit status is the same).")] = False,
) -> None:
    """Check the hash chain; exit 1 if any record was edited, deleted, reordered or cut.

    With a trust file (--trust, or --policy naming one) it also re-checks every approval's
    receipt (the signed votes that settled it), every signed checkpoint (in the log, and in
    --checkpoints files), and the link to a rotated log.

    On success it prints the last record as SEQ:HASH: keep that somewhere the agent cannot
    write, and pass it back with --expect next time.
    """
    from agentguard.audit import verify_log
    from agentguard.errors import AgentGuardError

    target = audit_path(path)
    anchors = dict(_anchor(text) for text in expect or ())
    trusted = _anchors(trust, policy)
    if isinstance(target, str):
        _verify_postgres(target, anchors, trusted, checkpoints, as_json)
        return
    if checkpoints and trusted is None:
        raise fail("--checkpoints needs the trust file that lists the service keys (--trust)")
    if not target.exists():
        if anchors or checkpoints:
            gone = (f"the audit log {target} is gone, and "
                    + (f"records {sorted(anchors)} were expected in it" if anchors
                       else "signed checkpoints name records of it"))
            if as_json:
                echo_json({"ok": False, "path": str(target), "records": 0, "last_seq": None,
                           "last_hash": None, "problems": [{
                               "seq": None, "line": None, "kind": "missing", "detail": gone,
                               "severity": "error"}]})
            say(f"FAILED: {gone}", fg="red", err=True)
            raise typer.Exit(EXIT_FAILED)
        raise not_found(f"no audit log at {target}")
    try:
        if trusted is None:
            report = verify_log(target, expect=anchors)
        else:
            from agentguard.audit.anchored import verify_anchored

            report = verify_anchored(target, trusted, checkpoint_files=tuple(checkpoints or ()),
                                     expect=anchors, allow_unsigned=allow_unsigned)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    _show_report(report, str(target), trusted is not None, as_json)


def _show_report(report: Any, where: str, trusted: bool, as_json: bool) -> None:
    if as_json:
        echo_json({
            "ok": report.ok, "path": where, "records": report.records,
            "last_seq": report.last_seq, "last_hash": report.last_hash,
            "problems": [{"seq": p.seq, "line": p.line, "kind": p.kind, "detail": p.detail,
                          "severity": p.severity} for p in report.problems],
        })
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)
        return
    for problem in report.problems:
        say(f"seq {problem.seq} line {problem.line}: {problem.kind}: {problem.detail}"
            + (" (warning)" if problem.severity == "warning" else ""),
            fg="yellow" if report.ok else "red", err=True)
    if report.ok:
        receipts = " and receipts" if trusted else ""
        typer.echo(f"ok: {report.records} record(s), chain{receipts} intact; last "
                   f"{report.last_seq}:{report.last_hash}")
        return
    errors = sum(p.severity == "error" for p in report.problems) + report.unlisted
    say(f"FAILED: {errors} problem(s) in {report.records} record(s)", fg="red", err=True)
    raise typer.Exit(EXIT_FAILED)


@app.command()
def rotate(path: PathArg = None) -> None:
    """Move a log that verifies clean aside and start a new chain that names it.

    The old file becomes <log>.<UTC time> (with its .head); the new chain's first record,
    audit.rotated, names that file and its final SEQ:HASH, and `audit verify` checks the link.
    A running writer follows once it has checked that the archive holds what it wrote.
    """
    from agentguard.audit.lifecycle import rotate_log
    from agentguard.errors import AgentGuardError

    try:
        done = rotate_log(_jsonl(path))
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    prev = done.record["previous"]
    typer.echo(f"rotated: {done.archive} ends at {prev['seq']}:{prev['hash']}; new chain "
               f"starts at 1:{done.record['hash']}")


@app.command()
def reset(
    path: PathArg = None,
    reason: Annotated[str, typer.Option(
        "--reason", help="Why the log is being reset (recorded in the new chain).")] = "",
    yes: Annotated[bool, typer.Option(
        "--yes", help="Confirm: the broken log is kept aside, not checked again.")] = False,
) -> None:
    """Start a new chain after the log broke (deleted, cut, edited), keeping the evidence.

    What is there (log and .head) is moved to <log>.broken-<UTC time>; the new chain's first
    record, audit.reset, says what verify found and why. Every later `audit verify` reports
    the reset, and anchors of the old chain no longer verify: a reset is an admission.
    """
    from agentguard.audit.lifecycle import rotate_log
    from agentguard.errors import AgentGuardError

    if not yes or not reason.strip():
        raise fail("a reset needs --reason TEXT and --yes")
    try:
        done = rotate_log(_jsonl(path), reset=reason)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    found = done.record["previous"]
    typer.echo(f"reset: kept {done.archive or 'nothing'} (problems: "
               f"{', '.join(found.get('problems') or []) or 'none'}); new chain starts at "
               f"1:{done.record['hash']}")


@app.command()
def checkpoint(
    path: PathArg = None,
    key: Annotated[str, typer.Option(
        "--key", envvar="AGENTGUARD_SERVICE_KEY", help="The service key (serve's "
        "--service-key), listed under services: in the trust file.")] = "",
    out: Annotated[str | None, typer.Option(
        "--out", help="Also append the checkpoint to this file; keep it where the agent "
        "cannot write.")] = None,
    into_log: Annotated[bool, typer.Option(
        "--log/--no-log", help="Append an audit.checkpoint record to the log.")] = True,
) -> None:
    """Sign the log's last SEQ:HASH with a service key (run as the serve user, e.g. hourly).

    `audit verify --trust FILE --checkpoints OUT` then detects a cut below any checkpoint in
    OUT and a rewrite below any checkpoint in the log: the agent cannot sign new ones.
    """
    from agentguard.audit.checkpoint import write_checkpoint
    from agentguard.errors import AgentGuardError
    from agentguard.trust import load_signing_key

    if not key:
        raise fail("--key (or $AGENTGUARD_SERVICE_KEY) is needed")
    try:
        signed = write_checkpoint(_jsonl(path), load_signing_key(key), into_log=into_log,
                                  out=out)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    c = signed.checkpoint
    typer.echo(f"checkpoint: {c.seq}:{c.hash} signed by {signed.key_id}")
