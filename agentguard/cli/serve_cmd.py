"""``agentguard serve``: answer held calls from Slack or a webhook, in a process of its own.

The server votes on the shared store (SQLite file or PostgreSQL), so the guard that holds a
call may live in any other process: an agent, the stdio MCP proxy. Endpoints::

    POST /slack/interactions   Slack interactivity (--slack; signed with the signing secret)
    POST /webhook/callback     decisions from your own tools (--webhook; signed, see
                               agentguard.channels.webhook)
    GET  /healthz              liveness
    GET  /  (and more)         the web approval page (--web; passkeys, see agentguard.web)

``--socket-mode`` receives Slack clicks over an outgoing websocket instead (no public URL).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from agentguard.cli.runtime import fail, open_audit
from agentguard.errors import AgentGuardError, ConfigError
from agentguard.settings import audit_path, store_url

__all__ = ["build_app", "register", "serve"]

SLACK_PATH = "/slack/interactions"
WEBHOOK_PATH = "/webhook/callback"


def build_app(routes: list[Any]) -> Any:
    """A Starlette app with ``routes`` and ``GET /healthz``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]), *routes])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    # Listening now (connections queue in the backlog) lets us announce the address before
    # uvicorn takes the socket over.
    sock.listen(128)
    return sock


async def _run(
    *, slack: bool, socket_mode: bool, webhook: bool, host: str, port: int, store: str,
    audit_file: str | None, slack_config: str | None, webhook_prefix: str,
    service_key: str | None = None, web: bool = False, trust: str | None = None,
    origin: str | None = None, rp_id: str | None = None,
    checkpoints: Checkpoints | None = None,
) -> None:
    import anyio

    from agentguard.store import open_store

    key = None
    if service_key:
        from agentguard.trust import load_signing_key

        key = load_signing_key(service_key)
    sink = open_audit(audit_path(audit_file))
    state = open_store(store)
    await state.open()
    try:
        routes: list[Any] = []
        listener = None
        if slack or socket_mode:
            from agentguard.channels.slack import (
                SlackInteractions,
                SlackSettings,
                SlackSocketMode,
            )

            settings = SlackSettings.load(slack_config)
            settings.require("bot_token", *(("signing_secret",) if slack else ()))
            interactions = SlackInteractions.from_settings(settings, store=state, audit=sink,
                                                           key=key)
            if slack:
                routes += interactions.routes(SLACK_PATH)
            if socket_mode:
                listener = SlackSocketMode.from_settings(settings, interactions)
        if webhook:
            from agentguard.channels.webhook import WebhookCallback

            secret = os.environ.get("AGENTGUARD_WEBHOOK_SECRET", "")
            if not secret:
                raise ConfigError("--webhook needs AGENTGUARD_WEBHOOK_SECRET (the shared secret)")
            routes += WebhookCallback(store=state, audit=sink, secret=secret,
                                      identity_prefix=webhook_prefix,
                                      key=key).routes(WEBHOOK_PATH)
        if web:
            routes += _web_routes(state, sink, trust, origin, rp_id, port)

        async with anyio.create_task_group() as tg:
            if key is not None and checkpoints is not None and checkpoints.every > 0:
                tg.start_soon(checkpoint_loop, checkpoints, key)
            if listener is not None:
                await listener.__aenter__()
                tg.start_soon(_close_on_cancel, listener)
                _say("Slack Socket Mode connected")
            if routes:
                await _serve_http(build_app(routes), host, port, slack, webhook, web)
                tg.cancel_scope.cancel()
    finally:
        await state.close()
        sink.close()


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """Signed checkpoints serve writes itself (see :func:`checkpoint_loop`).

    Attributes:
        log: The audit log to checkpoint (the agents' guards write it).
        every: Seconds between checkpoints (0: none).
        out: File the checkpoints are also appended to (serve's own, where the agent cannot
            write); None: only into the log.
        into_log: Also append an ``audit.checkpoint`` record to the log.
    """

    log: str
    every: float
    out: str | None
    into_log: bool = True


async def checkpoint_loop(checkpoints: Checkpoints, key: Any) -> None:
    """Sign a checkpoint of the log now and then every ``checkpoints.every`` seconds, with
    :func:`agentguard.audit.checkpoint.write_checkpoint` (what ``audit checkpoint`` runs).

    A log that does not verify (or cannot be read) is not signed: serve says so and tries
    again next time, and keeps answering votes meanwhile.
    """
    import anyio

    from agentguard.audit.checkpoint import write_checkpoint
    from agentguard.errors import AgentGuardError

    while True:
        try:
            signed = await anyio.to_thread.run_sync(lambda: write_checkpoint(
                checkpoints.log, key, into_log=checkpoints.into_log, out=checkpoints.out))
        except (AgentGuardError, OSError) as exc:
            _say(f"warning: no checkpoint of {checkpoints.log}: {exc}")
        else:
            c = signed.checkpoint
            _say(f"checkpoint {c.seq}:{c.hash[:16]} of {checkpoints.log} signed")
        await anyio.sleep(checkpoints.every)


def _web_routes(state: Any, sink: Any, trust: str | None, origin: str | None,
                rp_id: str | None, port: int) -> list[Any]:
    from pathlib import Path
    from urllib.parse import urlsplit

    from agentguard.trust import TrustAnchors
    from agentguard.web import WebApproval

    if not trust:
        raise ConfigError("--web needs --trust (the trust file serve may write passkeys into)")
    anchors = TrustAnchors.load(trust)  # fail at start, not at the first vote
    if not origin:
        if not port:
            raise ConfigError("--web with --port 0 needs --origin")
        origin = f"http://localhost:{port}"
    host = urlsplit(origin).hostname or ""
    for warning in anchors.warnings:
        if "writable by group or others" in warning:
            _say(f"warning: {warning}")
    return WebApproval(store=state, audit=sink, trust_path=Path(trust).expanduser(),
                       origin=origin.rstrip("/"), rp_id=rp_id or host).routes()


async def _close_on_cancel(listener: Any) -> None:
    import math

    import anyio

    try:
        await anyio.sleep(math.inf)
    finally:
        with anyio.CancelScope(shield=True):
            await listener.__aexit__(None, None, None)


async def _serve_http(app: Any, host: str, port: int, slack: bool, webhook: bool,
                      web: bool = False) -> None:
    import uvicorn

    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    # log_config=None: uvicorn's loggers propagate to the timestamped handler of _logging().
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           access_log=False, timeout_graceful_shutdown=5,
                                           log_config=None))
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    paths = [p for p, on in ((SLACK_PATH, slack), (WEBHOOK_PATH, webhook)) if on]
    served = [f"POST {', '.join(paths)}"] if paths else []
    if web:
        served.append("web approval page at /")
    _say(f"listening on http://{shown}:{bound_port} ({'; '.join(served)})")
    await server.serve(sockets=[sock])


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class _UtcFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)


def _say(message: str) -> None:
    stamp = time.strftime(_TIME_FORMAT, time.gmtime())
    print(f"{stamp} agentguard serve: {message}", flush=True)


def _logging() -> None:
    """Warnings (rejected signatures, replays, channel failures) to stderr, each line with
    its UTC time; serve runs for days and its log is read after the fact."""
    root = logging.getLogger()
    if root.handlers:  # configured by whoever embeds us
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(
        "%(asctime)s agentguard serve %(levelname)s %(name)s: %(message)s", _TIME_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def serve(
    slack: Annotated[bool, typer.Option("--slack", help="Serve Slack interactivity at "
                     f"POST {SLACK_PATH} (needs the bot token and signing secret).")] = False,
    socket_mode: Annotated[bool, typer.Option("--socket-mode", help="Receive Slack clicks "
                           "over Socket Mode (needs the app-level xapp- token; no public URL)."
                           )] = False,
    webhook: Annotated[bool, typer.Option("--webhook", help="Serve the signed webhook "
                       f"decision callback at POST {WEBHOOK_PATH} (needs "
                       "AGENTGUARD_WEBHOOK_SECRET).")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 3000,
    store: Annotated[str | None, typer.Option("--store", help="Store URL shared with the "
                     "guard (default: $AGENTGUARD_STORE or sqlite under ~/.agentguard).")]
    = None,
    audit: Annotated[str | None, typer.Option("--audit", help="Audit log (default: "
                     "$AGENTGUARD_AUDIT or ~/.agentguard/audit.jsonl).")] = None,
    slack_config: Annotated[str | None, typer.Option("--slack-config", help="YAML file with "
                            "the Slack tokens (default: $AGENTGUARD_SLACK_CONFIG; environment "
                            "variables AGENTGUARD_SLACK_* win).")] = None,
    webhook_identity_prefix: Annotated[str, typer.Option(
        "--webhook-identity-prefix", help="Prefix added to approver names sent to the "
        "webhook callback (e.g. 'ops-portal:').")] = "",
    service_key: Annotated[str | None, typer.Option(
        "--service-key", envvar="AGENTGUARD_SERVICE_KEY", help="serve's own Ed25519 key "
        "(`agentguard approvers keygen --out PATH`): each Slack or webhook vote it verified "
        "is signed with it, so rules with assurance: signed count it. List the public key "
        "under services: in the trust file; run serve as another OS user so the agent never "
        "reads this key.")] = None,
    web: Annotated[bool, typer.Option("--web", help="Serve the web approval page: sign in "
                   "and confirm each vote with a passkey (needs --trust and the 'web' extra)."
                   )] = False,
    trust: Annotated[str | None, typer.Option(
        "--trust", envvar="AGENTGUARD_TRUST", help="Trust file: --web reads approvers' "
        "passkeys from it and writes newly enrolled ones into it (serve's OS user owns it; "
        "the agent reads it read-only).")] = None,
    origin: Annotated[str | None, typer.Option(
        "--origin", help="The page's origin as browsers see it, e.g. "
        "https://approvals.example.com (default: http://localhost:PORT).")] = None,
    rp_id: Annotated[str | None, typer.Option(
        "--rp-id", help="WebAuthn relying party id (default: the origin's host name).")]
    = None,
    checkpoint_every: Annotated[str, typer.Option(
        "--checkpoint-every", metavar="DURATION", help="With --service-key, sign a "
        "checkpoint of the audit log this often (as `agentguard audit checkpoint` does); "
        "0 turns it off.")] = "1h",
    checkpoint_log: Annotated[str | None, typer.Option(
        "--checkpoint-log", help="The audit log to checkpoint (default: --audit's; the "
        "agents' guards write it, serve's user needs read and append access).")] = None,
    checkpoint_out: Annotated[str | None, typer.Option(
        "--checkpoint-out", help="Also append each checkpoint to this file, where the agent "
        "cannot write (default: checkpoints.jsonl under $AGENTGUARD_HOME of serve's user).")]
    = None,
) -> None:
    """Answer held calls from Slack, a webhook and/or the web page; votes go to the shared
    store."""
    import anyio

    from agentguard.durations import parse_duration
    from agentguard.settings import default_home

    if not (slack or socket_mode or webhook or web):
        raise fail("choose at least one of --slack, --socket-mode, --webhook, --web")
    try:
        every = parse_duration(checkpoint_every)
    except ValueError as exc:
        raise fail(f"--checkpoint-every: {exc}") from exc
    checkpoints = Checkpoints(
        log=str(audit_path(checkpoint_log or audit)), every=every,
        out=checkpoint_out or str(default_home() / "checkpoints.jsonl"))
    _logging()
    try:
        anyio.run(lambda: _run(
            slack=slack, socket_mode=socket_mode, webhook=webhook, host=host, port=port,
            store=store_url(store), audit_file=audit, slack_config=slack_config,
            webhook_prefix=webhook_identity_prefix, service_key=service_key, web=web,
            trust=trust, origin=origin, rp_id=rp_id, checkpoints=checkpoints))
    except AgentGuardError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        _say("stopped")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``agentguard`` command line."""
    app.command("serve")(serve)

