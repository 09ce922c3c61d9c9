"""The approver terminal: ``agentguard approvals list|show|approve|deny|watch``.

Works against the shared store, so it answers calls held by any process using it: a
headless agent, the stdio MCP proxy, another terminal.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import click
import typer

from agentguard.cli.runtime import (
    EXIT_FAILED,
    echo_json,
    fail,
    not_found,
    open_audit,
    run_with_store,
    wide_console,
)
from agentguard.settings import approver_identity, audit_path, store_url

if TYPE_CHECKING:
    from agentguard.audit.base import AuditSink
    from agentguard.store.base import Store
    from agentguard.types import ApprovalRequest

__all__ = ["app"]

app = typer.Typer(help="Answer held calls from another terminal.", no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (default: "
                     "$AGENTGUARD_STORE or sqlite under ~/.agentguard).")]
AuditOpt = Annotated[str | None, typer.Option("--audit", help="Audit log (default: "
                     "$AGENTGUARD_AUDIT or ~/.agentguard/audit.jsonl).")]
RequestId = Annotated[str, typer.Argument(help="The request's id (`agentguard approvals list`).")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Approver name (default: "
                  "$AGENTGUARD_APPROVER or the OS user).")]


def _checked(request_id: str) -> str:
    """Request ids are printable ASCII; anything else cannot exist (and must not crash)."""
    if not (request_id.isascii() and request_id.isprintable()):
        raise not_found(f"no approval request {request_id!r}")
    return request_id


@app.command("list")
def list_(
    store: StoreOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include settled requests.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"requests": [...]}, each as `approvals show --json` prints it.')]
    = False,
) -> None:
    """List pending approval requests (newest first)."""
    from rich.table import Table

    from agentguard.cli.json_shapes import request_json
    from agentguard.sanitize import escape_text as esc

    requests = run_with_store(store_url(store), lambda s: s.list_requests(
        None if all_ else "pending"))
    if as_json:
        echo_json({"requests": [request_json(r) for r in requests]})
        return
    table = Table("id", "tool", "principal", "class", "status", "expires in", "why")
    now = time.time()
    for r in requests:
        table.add_row(r.id, esc(f"{r.call.get('server')}/{r.call.get('tool')}"),
                      esc(str(r.call.get("principal"))), r.privilege, r.status,
                      f"{max(0, r.expires_at - now):.0f}s" if r.status == "pending" else "-",
                      esc(r.reason)[:60])
    wide_console().print(table if requests else "no pending requests")


def _full_hint(request_id: str) -> str:
    return f"see all of it: agentguard approvals show {request_id} --full"


def page_whole_call(request: ApprovalRequest) -> None:
    """Show the whole call, escaped, through ``$PAGER`` (all of it, unpaged, to a pipe)."""
    from agentguard.channels.render import render_request

    # color=False: the text is escaped plain text, and less must not be told to pass
    # raw control sequences through (click would set LESS=-R).
    click.echo_via_pager(render_request(request, arg_limit=2**62), color=False)


@app.command()
def show(
    request_id: RequestId, store: StoreOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Show every argument, through $PAGER "
                    "on a terminal.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the request as JSON: the whole call, approvers, votes.")]
    = False,
) -> None:
    """Show one request exactly as an approver should read it (arguments escaped)."""
    from agentguard.channels.render import render_request

    _checked(request_id)
    request = run_with_store(store_url(store), lambda s: s.get_request(request_id))
    if request is None:
        raise not_found(f"no approval request {request_id!r}")
    from agentguard.approvals import call_hash_problem, redacted_view

    warning = call_hash_problem(request) or redacted_view(request)
    if warning is not None:
        typer.echo(f"WARNING: {warning}", err=True)
    from agentguard.approvals import shown_hash, shown_view

    seen = shown_hash(shown_view(request))
    if as_json:
        from agentguard.cli.json_shapes import request_json

        echo_json(request_json(request))
        return
    if full:
        page_whole_call(request)
    else:
        typer.echo(render_request(request, full_hint=_full_hint(request.id)))
    if seen is not None:
        # What a signed vote names: approving with --shown refuses if the call changes
        # between this view and the vote.
        typer.echo(f"shown as {seen[:16]} (approve exactly this view: agentguard approvals"
                   f" approve {request.id} --shown {seen[:16]})")


def _counted(verb: str, identity: str, request: ApprovalRequest) -> str:
    """What a counted vote did, in one line."""
    if request.status == "pending":
        got = sum(1 for v in request.votes if v.approve)
        return f"{verb} as {identity}: {got} of {request.approval.quorum} approvals so far"
    return f"{verb} as {identity}: request is now {request.status}"


def _signing_key():
    """The approver's own key (``$AGENTGUARD_APPROVER_KEY`` or
    ``~/.config/agentguard/approver.key``), when there is one: votes are then signed."""
    from agentguard.trust import KeyFileError, default_key_path, load_signing_key

    path = default_key_path()
    if not path.exists():
        return None
    try:
        return load_signing_key(path)
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc


def _vote(request_id: str, approve: bool, store: str | None, audit: str | None,
          as_: str | None, reason: str, grant_ttl: float,
          edited_args: dict | None = None, shown: str | None = None) -> None:
    from agentguard.approvals import cast_vote

    _checked(request_id)
    identity = approver_identity(as_)
    sink = open_audit(audit_path(audit))
    key = _signing_key()

    async def go(s):
        return await cast_vote(store=s, audit=sink, request_id=request_id, approver=identity,
                               approve=approve, channel="cli", reason=reason,
                               grant_ttl=grant_ttl, edited_args=edited_args, key=key,
                               shown=shown)

    request, problem = run_with_store(store_url(store), go)
    if problem is not None:
        raise fail(problem, EXIT_FAILED)
    assert request is not None
    verb = "approved" if approve else ("edited" if edited_args is not None else "denied")
    typer.echo(_counted(verb, identity, request))


@app.command()
def approve(
    request_id: RequestId,
    for_: Annotated[str | None, typer.Option("--for", help="Also allow the same tool for this "
                    "long (e.g. 15m), if the rule permits.")] = None,
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
    shown: Annotated[str | None, typer.Option("--shown", help="The 'shown as' hash `show` "
                     "printed: refuse if the stored call changed since you read it.")] = None,
) -> None:
    """Approve a held call (the exact call shown by `show`, nothing else)."""
    from agentguard.durations import parse_duration

    try:
        ttl = parse_duration(for_) if for_ else 0.0
    except ValueError as exc:
        raise fail(f"--for: {exc}") from exc
    _vote(request_id, True, store, audit, as_, "", ttl, shown=shown)


@app.command()
def deny(
    request_id: RequestId,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded and shown to the "
                      "agent; default: 'no reason given').")] = "",
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
) -> None:
    """Deny a held call."""
    from agentguard.channels.render import REASON_LIMIT, denial_reason

    if len(reason) > REASON_LIMIT:
        raise fail(f"--reason is longer than {REASON_LIMIT} characters")
    _vote(request_id, False, store, audit, as_, denial_reason(reason), 0.0)


@app.command()
def edit(
    request_id: RequestId,
    args: Annotated[str, typer.Option("--args", help="The arguments to run instead, as a JSON "
                    "object. The held call is refused; the edited call is decided afresh by "
                    "the policy and may need its own approval.")],
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
) -> None:
    """Refuse a held call and propose other arguments in its place."""
    from agentguard.canonical import CanonicalizationError, loads_strict

    try:
        edited = loads_strict(args)
    except CanonicalizationError as exc:
        raise fail(f"--args: {exc}") from exc
    if not isinstance(edited, dict):
        raise fail("--args must be a JSON object")
    _vote(request_id, False, store, audit, as_, "arguments edited by the approver", 0.0, edited)


_WATCH_PROMPT = "approve [a], approve for N [a 15m], deny [d reason], skip [s]"


@app.command()
def watch(
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between checks.")] = 0.5,
    once: Annotated[bool, typer.Option(help="Answer what is pending, then exit.")] = False,
) -> None:
    """Live view: show each new request and prompt approve / deny / view all / skip."""
    from agentguard.store import open_store

    identity = approver_identity(as_)
    sink = open_audit(audit_path(audit))
    key = _signing_key()
    seen: set[str] = set()

    async def loop() -> None:
        s = open_store(store_url(store))
        await s.open()
        try:
            typer.echo(f"watching for held calls as {identity} (Ctrl-C to stop)")
            while True:
                pending = [r for r in await s.list_requests("pending") if r.id not in seen]
                for request in reversed(pending):
                    seen.add(request.id)
                    await _answer_one(s, sink, request, identity, key)
                if once:
                    return
                await anyio.sleep(interval)
        finally:
            await s.close()

    try:
        anyio.run(loop)
    except KeyboardInterrupt:
        typer.echo("stopped")


async def _answer_one(
    store: Store, sink: AuditSink, request: ApprovalRequest, identity: str, key: Any = None,
) -> None:
    """Show one request and ask until it is decided here or skipped."""
    from agentguard.approvals import cast_vote, shown_hash, shown_view
    from agentguard.channels.answers import AnswerRejected, parse_answer, wants_full_view
    from agentguard.channels.render import arguments_truncated, render_request

    typer.echo(render_request(request, full_hint="type 'v' to read the whole call"))
    truncated = arguments_truncated(request)
    viewed = False
    question = _WATCH_PROMPT + (", view all [v]" if truncated else "")
    while True:
        line = (await anyio.to_thread.run_sync(
            lambda: typer.prompt(question, default="s"))).strip()
        if line.lower() in ("s", "skip"):
            typer.echo("skipped")
            return
        if wants_full_view(line):
            await anyio.to_thread.run_sync(page_whole_call, request)
            viewed = True
            continue
        try:
            answer = parse_answer(line, max_grant=request.approval.max_grant,
                                  needs_view=truncated and not viewed)
        except AnswerRejected as exc:
            typer.echo(str(exc))
            continue
        settled, problem = await cast_vote(
            store=store, audit=sink, request_id=request.id, approver=identity,
            approve=answer.approve, channel="cli", reason=answer.reason,
            grant_ttl=answer.grant_ttl, key=key, shown=shown_hash(shown_view(request)))
        if problem is not None or settled is None:
            typer.echo(f"not recorded: {problem}")
        else:
            typer.echo(_counted("approved" if answer.approve else "denied", identity, settled))
        return
