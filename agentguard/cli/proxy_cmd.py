"""``agentguard proxy`` and ``agentguard pins``: the MCP proxy and its tool pins."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from agentguard.cli.runtime import fail

__all__ = ["main_app", "pins_app", "proxy_command", "register", "standalone_app"]

_EPILOG = (
    # \b keeps click from re-wrapping the examples into broken command lines.
    "Examples:\n\n\b\n"
    "  agentguard proxy --policy policy.yaml \\\n"
    "      -- python examples/servers/ops_server.py\n"
    "  agentguard proxy --policy policy.yaml \\\n"
    "      --upstream-url http://127.0.0.1:8765/mcp\n"
    "  agentguard proxy --config proxy.yaml --listen 127.0.0.1:8787\n"
    "  agentguard proxy --config proxy.yaml --listen 0.0.0.0:8787 \\\n"
    "      --public-url https://agentguard.example"
)


def proxy_command(
    ctx: typer.Context,
    command: Annotated[list[str] | None, typer.Argument(
        help="Upstream stdio server command and its arguments, after `--`.",
        show_default=False)] = None,
    policy: Annotated[str | None, typer.Option(
        "--policy", help="Policy file (default: $AGENTGUARD_POLICY).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", help="Proxy config file with several upstreams (YAML).")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Store URL shared with approvers "
        "(default: $AGENTGUARD_STORE or sqlite under ~/.agentguard).")] = None,
    audit: Annotated[str | None, typer.Option(
        "--audit", help="JSONL audit log (default: $AGENTGUARD_AUDIT or "
        "~/.agentguard/audit.jsonl).")] = None,
    upstream_url: Annotated[str | None, typer.Option(
        "--upstream-url", help="Front a Streamable HTTP upstream at this URL.")] = None,
    listen: Annotated[str | None, typer.Option(
        "--listen", help="Serve Streamable HTTP on HOST:PORT (path /mcp) instead of stdio.")]
    = None,
    public_url: Annotated[str | None, typer.Option(
        "--public-url", metavar="URL",
        help="Base URL where users' browsers reach this proxy (e.g. "
        "https://agentguard.example behind a reverse proxy, or when listening on 0.0.0.0). "
        "TOTP re-authentication links of URL-mode elicitation are "
        "URL/agentguard/reauth/TOKEN; a reverse proxy must forward them to "
        "/agentguard/reauth/TOKEN here. Needs --listen. Default: http://HOST:PORT of --listen "
        "(127.0.0.1 for 0.0.0.0 or ::). Use https:// beyond loopback: over http:// the codes "
        "travel in clear.")] = None,
    passkey_page: Annotated[str | None, typer.Option(
        "--passkey-page", metavar="URL",
        help="Origin of `agentguard serve --web`: rules with reauth: {method: passkey} send "
        "the human to URL/stepup/REQUEST (a URL-mode elicitation where the rule names "
        "mcp-elicitation). Needs trust: in the policy.")] = None,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        "--trusted-proxy", metavar="ADDR",
        help="IP or CIDR of a reverse proxy whose X-Forwarded-For names the caller "
        "(repeatable; --listen only). Without it the TCP peer is the caller's source address "
        "for network signals, and X-Forwarded-For is ignored.")] = None,
    max_connections: Annotated[int | None, typer.Option(
        "--max-connections", metavar="N", min=1,
        help="Client connections --listen serves at once; one more is answered 503 and "
        "closed at once (default 1024, or `max_connections:` in the config).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Server name of the single upstream, as policies and pins see it "
        "(default: the name the server gives itself, serverInfo.name, remembered per command "
        "in the store; a server the policy trusts needs --name).")] = None,
    principal: Annotated[str | None, typer.Option(
        "--principal", help="Principal the proxied calls run as (default agent:mcp-client).")]
    = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", help="KEY=VALUE for the upstream's environment (repeatable). The upstream "
        "does not inherit the proxy's environment.")] = None,
    mode: Annotated[str, typer.Option(
        "--upstream-mode", help="auto | legacy | 2026-07-28: the protocol era towards the "
        "upstream. auto: a stdio proxy speaks its client's era (a handshake-era client gets a "
        "handshake-era upstream, nothing converted per call); over --listen, 2026-07-28 "
        "where the upstream has it, else the handshake era.")]
    = "auto",
    answer_held_after: Annotated[float | None, typer.Option(
        "--answer-held-after", metavar="SECONDS", min=0,
        help="Answer a call still held after SECONDS with an isError result saying it waits "
        "for approval under request ID and runs, once approved, when the identical call is "
        "made again (the request stays pending for its policy timeout). Below the client's "
        "own timeout (60 s for most). 0: wait for the verdict. Default: 50, or "
        "`answer_held_after:` in the config.")] = None,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="Logging level on stderr.")] = "INFO",
    relay: Annotated[bool, typer.Option(
        "--relay/--no-relay", help="Relay calls that may skip the guard (pinned, allowed by "
        "the policy whatever their arguments) without the SDK's server and client stacks "
        "(stdio and HTTP); off only to compare.")] = True,
    fast_path: Annotated[bool | None, typer.Option(
        "--fast-path/--no-fast-path", hidden=True,
        help="Old spelling of --relay/--no-relay.")] = None,
) -> None:
    """Guard every tool call between an MCP client and MCP server(s).

    The proxy is a drop-in `command`/`args` entry for Claude Desktop or Cursor: it fronts the
    upstream, classifies each tools/call with the policy, holds risky calls until a human
    approves (`agentguard approvals approve ID` in another terminal, or MCP elicitation where a
    rule opts in), pins tool definitions, and refuses the rest with an isError tool result.
    """
    import anyio

    from agentguard.errors import AgentGuardError, ConfigError
    from agentguard.proxy.config import (
        ProxyConfig,
        UpstreamConfig,
        default_server_name,
        load_config,
        validate_config,
    )
    from agentguard.proxy.runner import run_proxy

    _logging(log_level)
    command = list(command or []) + list(ctx.args)
    try:
        data = (load_config(config) if config else ProxyConfig()).model_dump()
        data |= {k: v for k, v in (("policy", policy), ("store", store), ("audit", audit),
                                   ("listen", listen), ("public_url", public_url),
                                   ("passkey_page", passkey_page))
                 if v is not None}
        if answer_held_after is not None:
            data["answer_held_after"] = answer_held_after or None
        if trusted_proxy:
            data["trusted_proxies"] = list(trusted_proxy)
        if max_connections is not None:
            data["max_connections"] = max_connections
        if principal:
            kind = principal.split(":", 1)[0] if ":" in principal else "agent"
            data["principal"] = {"id": principal, "kind": kind, "claims": {}}
        if command and upstream_url:
            raise ConfigError("give either `-- CMD ARGS` or --upstream-url, not both")
        if command or upstream_url:
            target = upstream_url or command[0]
            single = UpstreamConfig(
                name=name or default_server_name(target), name_from_server=name is None,
                url=upstream_url,
                command=None if upstream_url else command[0],
                args=[] if upstream_url else command[1:],
                env=dict(_pair(e) for e in env or []), mode=mode)  # type: ignore[arg-type]
            data["servers"] = [*data["servers"], single.model_dump()]
        elif not data["servers"]:
            raise ConfigError("nothing to proxy: give `-- CMD ARGS`, --upstream-url or --config")
        cfg = validate_config(data)
    except (AgentGuardError, ValueError) as exc:
        raise fail(str(exc)) from exc
    try:
        anyio.run(lambda: run_proxy(cfg, relay=relay if fast_path is None else fast_path),
                  backend_options=_loop_options(http=cfg.listen is not None))
    except AgentGuardError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--env takes KEY=VALUE, got {text!r}")
    return key, value


def _logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="agentguard proxy %(levelname)s %(name)s: %(message)s")
    logging.getLogger("agentguard").setLevel(level.upper())


# --------------------------------------------------------------------------- pins

pins_app = typer.Typer(help="Tool definition pins of MCP upstreams (rug-pull protection).",
                       no_args_is_help=True)


@pins_app.command("list")
def pins_list(
    server: Annotated[str | None, typer.Argument(help="Only this server.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"pins": [...]}.')] = False,
) -> None:
    """List pinned tools, and tools whose definition changed or was never approved."""
    from agentguard.proxy.pins import list_pins

    rows = _with_store(store, lambda s: list_pins(s, server))
    if as_json:
        from agentguard.cli.json_shapes import pin_json
        from agentguard.cli.runtime import echo_json

        echo_json({"pins": [pin_json(row) for row in rows]})
        return
    if not rows:
        typer.echo("no pins")
        return
    from agentguard.sanitize import escape_text

    for row in rows:
        hashes = [f"hash {row.pinned_hash[:16]}"] if row.pinned_hash else []
        if row.state != "pinned":
            hashes.append(f"pending {row.pending_hash[:16]}")
        typer.echo(f"{row.state:<8} {escape_text(row.server)}/{escape_text(row.tool)}  "
                   + "  ".join(hashes))


@pins_app.command("show")
def pins_show(
    server: Annotated[str, typer.Argument(help="Server name.")],
    tool: Annotated[str, typer.Argument(help="Tool name on that server (no namespace).")],
    store: Annotated[str | None, typer.Option("--store", help="Store URL.")] = None,
) -> None:
    """Print the pinned and the pending definition of SERVER TOOL in full, and their diff."""
    from agentguard.proxy.pin_review import load_review

    review = _with_store(store, lambda s: load_review(s, server, tool))
    if review.pinned is None and review.pending is None:
        typer.echo(f"no pin and nothing pending for {review.render().splitlines()[0]}",
                   err=True)
        raise typer.Exit(1)
    typer.echo(review.render())
    if not review.verified:  # the store was altered: nothing here may be approved
        raise typer.Exit(1)


@pins_app.command("approve")
def pins_approve(
    server: Annotated[str, typer.Argument(help="Server name.")],
    tool: Annotated[str, typer.Argument(help="Tool name on that server (no namespace).")],
    hash_: Annotated[str, typer.Argument(
        metavar="HASH", help="The full hash of the pending definition you reviewed "
        "(`agentguard pins show SERVER TOOL` prints it).")],
    store: Annotated[str | None, typer.Option("--store", help="Store URL.")] = None,
    audit: Annotated[str | None, typer.Option("--audit", help="Audit log path.")] = None,
) -> None:
    """Pin the pending definition of SERVER TOOL, if it is the one you reviewed (HASH)."""

    from agentguard.errors import ConflictError
    from agentguard.proxy.pins import approve_pin
    from agentguard.sanitize import escape_text
    from agentguard.settings import approver_identity, audit_path, open_audit_log

    async def approve(s: Any) -> Any:
        try:
            return await approve_pin(s, server, tool, expected_hash=hash_, audit=sink,
                                     approver=approver_identity())
        except ConflictError as exc:  # names hashes from the store: escaped below
            return exc

    sink = open_audit_log(audit_path(audit))
    try:
        row = _with_store(store, approve)
    finally:
        sink.close()
    if isinstance(row, ConflictError):
        typer.secho(f"not approved: {escape_text(str(row))}", err=True, fg="red")
        raise typer.Exit(1)
    typer.echo(f"approved {escape_text(server)}/{escape_text(tool)}: pinned {row.pinned_hash}")


def _with_store(url: str | None, fn):
    from agentguard.cli.runtime import run_with_store
    from agentguard.settings import store_url

    return run_with_store(store_url(url), fn)


# --------------------------------------------------------------------------- registration

_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": False}


def register(app: typer.Typer) -> None:
    """Add ``proxy`` and ``pins`` to the main CLI."""
    app.command("proxy", context_settings=_CONTEXT, epilog=_EPILOG)(proxy_command)
    app.add_typer(pins_app, name="pins")


def main_app() -> typer.Typer:
    """The ``agentguard`` command line with only ``proxy`` and ``pins`` registered: what
    ``agentguard proxy ...`` runs, parsed and checked as by the full command line, without
    importing (and building) every other command first."""
    from agentguard.cli.helptext import name_arguments

    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                      rich_markup_mode=None)

    @app.callback()
    def _root() -> None:
        """The root: no options of its own (only ``proxy ...`` is dispatched here)."""

    register(app)
    return name_arguments(app)


def standalone_app() -> None:
    """Entry point of ``python -m agentguard.proxy``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command(context_settings=_CONTEXT, epilog=_EPILOG)(proxy_command)
    from agentguard.cli.helptext import name_arguments, name_metavars

    name_metavars(typer.main.get_command(name_arguments(app)))()


def _loop_options(*, http: bool) -> dict[str, Any]:
    """uvloop for the HTTP server where it is installed (a dependency off Windows), as
    uvicorn picks it by default: measured 0.05 ms less per relayed call, with throughput
    kept. Stdio keeps asyncio, whose pipe readiness callbacks batch better under load."""
    if not http:
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
