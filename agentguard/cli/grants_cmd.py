"""``agentguard grants list|revoke``: standing permissions created by approvals."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from agentguard.cli.runtime import echo_json, not_found, open_audit, run_with_store, wide_console
from agentguard.settings import audit_path, store_url

__all__ = ["app"]

app = typer.Typer(help="List and revoke grants ('approve for N minutes').",
                  no_args_is_help=True)
StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL.")]


@app.command("list")
def list_(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"grants": [...]}.')] = False,
) -> None:
    """List live grants."""
    from rich.table import Table

    from agentguard.cli.json_shapes import grant_json
    from agentguard.sanitize import escape_text as esc

    grants = run_with_store(store_url(store), lambda s: s.list_grants(time.time()))
    if as_json:
        echo_json({"grants": [grant_json(g) for g in grants]})
        return
    table = Table("id", "scope", "principal", "server/tool", "max class rank", "expires in",
                  "granted by", "uses")
    now = time.time()
    for g in grants:
        table.add_row(g.id, g.scope, esc(g.principal), esc(f"{g.server}/{g.tool}"),
                      str(g.max_rank), f"{max(0, g.expires_at - now):.0f}s", esc(g.granted_by),
                      str(g.uses))
    wide_console().print(table if grants else "no live grants")


@app.command()
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant's id (`agentguard grants list`).")],
    store: StoreOpt = None,
    audit: Annotated[str | None, typer.Option("--audit", help="Audit log path.")] = None,
) -> None:
    """Revoke a grant immediately."""
    removed = run_with_store(store_url(store), lambda s: s.revoke_grant(grant_id))
    if not removed:
        raise not_found(f"no live grant {grant_id!r}")
    open_audit(audit_path(audit)).append({"type": "grant.revoked", "grant_id": grant_id})
    typer.echo(f"revoked {grant_id}")
