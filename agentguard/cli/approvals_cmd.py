"""The approver terminal: ``agentguard approvals list|show|approve|deny|watch``.

Works against the shared store, so it answers calls held by any process using it: a
headless agent, the stdio MCP proxy, another terminal.
"""

from __future__ import annotations

import time
from typing import Annotated

import anyio
import typer

from agentguard.cli.runtime import fail, open_audit, run_with_store, wide_console
from agentguard.settings import approver_identity, audit_path, store_url

__all__ = ["app"]

app = typer.Typer(help="Answer held calls from another terminal.", no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (default: "
                     "$AGENTGUARD_STORE or sqlite under ~/.agentguard).")]
AuditOpt = Annotated[str | None, typer.Option("--audit", help="Audit log (default: "
                     "$AGENTGUARD_AUDIT or ~/.agentguard/audit.jsonl).")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Approver name (default: "
                  "$AGENTGUARD_APPROVER or the OS user).")]


def _checked(request_id: str) -> str:
    """Request ids are printable ASCII; anything else cannot exist (and must not crash)."""
    if not (request_id.isascii() and request_id.isprintable()):
        raise fail(f"no approval request {request_id!r}")
    return request_id


@app.command("list")
def list_(
    store: StoreOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include settled requests.")] = False,
) -> None:
    """List pending approval requests (newest first)."""
    from rich.table import Table

    from agentguard.sanitize import escape_text as esc

    requests = run_with_store(store_url(store), lambda s: s.list_requests(
        None if all_ else "pending"))
    table = Table("id", "tool", "principal", "class", "status", "expires in", "why")
    now = time.time()
    for r in requests:
        table.add_row(r.id, esc(f"{r.call.get('server')}/{r.call.get('tool')}"),
                      esc(str(r.call.get("principal"))), r.privilege, r.status,
                      f"{max(0, r.expires_at - now):.0f}s" if r.status == "pending" else "-",
                      esc(r.reason)[:60])
    wide_console().print(table if requests else "no pending requests")


@app.command()
def show(request_id: str, store: StoreOpt = None) -> None:
    """Show one request exactly as an approver should read it (arguments escaped)."""
    from agentguard.channels.render import render_request

    _checked(request_id)
    request = run_with_store(store_url(store), lambda s: s.get_request(request_id))
    if request is None:
        raise fail(f"no approval request {request_id!r}")
    typer.echo(render_request(request))


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
        raise fail(str(exc), code=1) from exc


def _vote(request_id: str, approve: bool, store: str | None, audit: str | None,
          as_: str | None, reason: str, grant_ttl: float,
          edited_args: dict | None = None) -> None:
    from agentguard.approvals import cast_vote

    _checked(request_id)
    identity = approver_identity(as_)
    sink = open_audit(audit_path(audit))
    key = _signing_key()

    async def go(s):
        return await cast_vote(store=s, audit=sink, request_id=request_id, approver=identity,
                               approve=approve, channel="cli", reason=reason,
                               grant_ttl=grant_ttl, edited_args=edited_args, key=key)

    request, problem = run_with_store(store_url(store), go)
    if problem is not None:
        raise fail(problem, code=1)
    assert request is not None
    verb = "approved" if approve else ("edited" if edited_args is not None else "denied")
    state = request.status
    if state == "pending":
        got = sum(1 for v in request.votes if v.approve)
        typer.echo(f"{verb} as {identity}: {got} of {request.approval.quorum} approvals so far")
    else:
        typer.echo(f"{verb} as {identity}: request is now {state}")


@app.command()
def approve(
    request_id: str,
    for_: Annotated[str | None, typer.Option("--for", help="Also allow the same tool for this "
                    "long (e.g. 15m), if the rule permits.")] = None,
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
) -> None:
    """Approve a held call (the exact call shown by `show`, nothing else)."""
    from agentguard.durations import parse_duration

    try:
        ttl = parse_duration(for_) if for_ else 0.0
    except ValueError as exc:
        raise fail(f"--for: {exc}") from exc
    _vote(request_id, True, store, audit, as_, "", ttl)


@app.command()
def deny(
    request_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded and shown to the "
                      "agent).")] = "denied at the approver terminal",
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
) -> None:
    """Deny a held call."""
    _vote(request_id, False, store, audit, as_, reason, 0.0)


@app.command()
def edit(
    request_id: str,
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


@app.command()
def watch(
    store: StoreOpt = None, audit: AuditOpt = None, as_: AsOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between checks.")] = 0.5,
    once: Annotated[bool, typer.Option(help="Answer what is pending, then exit.")] = False,
) -> None:
    """Live view: show each new request and prompt approve / deny / skip."""
    from agentguard.approvals import cast_vote
    from agentguard.channels.render import render_request
    from agentguard.durations import parse_duration
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
                    typer.echo(render_request(request))
                    answer = (await anyio.to_thread.run_sync(
                        lambda: typer.prompt("approve [a], approve for N [a 15m], deny [d "
                                             "reason], skip [s]", default="s"))).strip()
                    word, _, rest = answer.partition(" ")
                    if word.lower() in ("a", "approve", "y"):
                        ttl = parse_duration(rest) if rest.strip() else 0.0
                        _, problem = await cast_vote(
                            store=s, audit=sink, request_id=request.id, approver=identity,
                            approve=True, channel="cli", grant_ttl=ttl, key=key)
                    elif word.lower() in ("d", "deny", "n"):
                        _, problem = await cast_vote(
                            store=s, audit=sink, request_id=request.id, approver=identity,
                            approve=False, channel="cli", reason=rest or "denied at terminal",
                            key=key)
                    else:
                        typer.echo("skipped")
                        continue
                    typer.echo(f"not recorded: {problem}" if problem else "recorded")
                if once:
                    return
                await anyio.sleep(interval)
        finally:
            await s.close()

    try:
        anyio.run(loop)
    except KeyboardInterrupt:
        typer.echo("stopped")
