"""An example upstream MCP server for an operations team, used by the proxy's tests and docs.

It is deliberately small but honest: every tool's annotations say what it really does, and
the destructive tools really act on a sandbox directory (``--root``), so a test can check that
a refused call left no trace. It also exercises the parts of MCP a faithful proxy must carry:
resources (+ a template and subscriptions), a prompt with completions, progress, and the
three requests a server sends to the client (elicitation, sampling, roots).

Run it::

    python examples/servers/ops_server.py [--root DIR]              # stdio
    python examples/servers/ops_server.py --http 8765 [--root DIR]  # Streamable HTTP on /mcp
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    Completion,
    CreateMessageResult,
    EmptyResult,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SubscribeRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

SERVICES: dict[str, dict[str, Any]] = {
    "api": {"state": "running", "version": "1.4.2", "restarts": 0},
    "billing": {"state": "running", "version": "2.0.1", "restarts": 0},
    "search": {"state": "degraded", "version": "0.9.7", "restarts": 0},
}
SECRETS = {"prod/db-password": "hunter2-prod", "staging/db-password": "hunter2-staging"}
DEPLOYMENTS: list[dict[str, str]] = []
SUBSCRIBED: set[str] = set()
ROOT = Path(os.environ.get("OPS_SERVER_ROOT") or tempfile.mkdtemp(prefix="ops-server-"))

mcp = MCPServer("ops", version="1.0", instructions="Operations tools for the demo platform.")


def _service(name: str) -> dict[str, Any]:
    try:
        return SERVICES[name]
    except KeyError:
        # A protocol error (not a tool error) so the proxy's pass-through of errors is testable.
        raise MCPError(code=INVALID_PARAMS, message=f"unknown service {name!r}") from None


async def _changed(ctx: Context, uri: str) -> None:
    """Tell both protocol eras that a resource changed."""
    await ctx.notify_resource_updated(uri)
    if uri in SUBSCRIBED and ctx.session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        await ctx.session.send_resource_updated(uri)


# --------------------------------------------------------------------------- read-only


@mcp.tool(annotations=READ_ONLY)
async def list_services() -> list[str]:
    """List the services this team operates."""
    return sorted(SERVICES)


@mcp.tool(annotations=READ_ONLY)
async def get_status(service: str) -> str:
    """Current state, version and restart count of one service."""
    s = _service(service)
    return f"{service}: {s['state']} (version {s['version']}, restarts {s['restarts']})"


@mcp.tool(annotations=READ_ONLY)
async def count_to(n: int, ctx: Context) -> str:
    """Count slowly to n, reporting progress (a long-running read)."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i}")
        await anyio.sleep(0.05)
    return f"counted to {n}"


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
async def read_secret(path: str) -> str:
    """Read a secret from the vault (read-only, but sensitive)."""
    if path not in SECRETS:
        raise ToolError(f"no secret at {path!r}")
    return SECRETS[path]


# --------------------------------------------------------------------------- writes


@mcp.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True,
                                      open_world_hint=False))
async def delete_file(path: str) -> str:
    """Delete a file under the server's sandbox root."""
    target = (ROOT / path).resolve()
    if ROOT.resolve() not in target.parents:
        raise ToolError("path escapes the sandbox root")
    target.unlink()
    return f"deleted {path}"


@mcp.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False,
                                      open_world_hint=False))
async def restart_service(service: str, ctx: Context) -> str:
    """Restart a service (drops its in-flight requests)."""
    s = _service(service)
    s["restarts"] += 1
    s["state"] = "running"
    await _changed(ctx, f"ops://services/{service}/status")
    return f"restarted {service} ({s['restarts']} restarts)"


@mcp.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True,
                                      open_world_hint=True))
async def deploy(env: str, service: str, version: str) -> str:
    """Deploy a version of a service to an environment."""
    _service(service)
    DEPLOYMENTS.append({"env": env, "service": service, "version": version})
    if env == "production":
        SERVICES[service]["version"] = version
    return f"deployed {service} {version} to {env}"


@mcp.tool()
async def purge_cache() -> str:
    """Purge the shared cache (declares no annotations: clients must assume the worst)."""
    return "cache purged"


@mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                      open_world_hint=False))
async def enable_debug_tools(ctx: Context) -> str:
    """Add the debug_dump tool and announce the new tool list."""
    if "debug_dump" not in {t.name for t in await mcp.list_tools()}:
        mcp.add_tool(_debug_dump, name="debug_dump", annotations=READ_ONLY)
    await ctx.notify_tools_changed()
    if ctx.session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        await ctx.session.send_tool_list_changed()
    return "debug tools enabled"


async def _debug_dump() -> str:
    """Dump internal state (added at run time)."""
    return repr({"services": SERVICES, "deployments": DEPLOYMENTS})


# --------------------------------------------------------------------------- asking the client


class Confirm(BaseModel):
    """The maintenance window confirmation form."""

    confirm: bool
    minutes: int = 30


async def _ask_window(service: str) -> Elicit[Confirm]:
    return Elicit(f"Schedule maintenance for {service}?", Confirm)


@mcp.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
async def schedule_maintenance(
    service: str, answer: Annotated[ElicitationResult[Confirm], Resolve(_ask_window)]
) -> str:
    """Schedule a maintenance window, after asking the user to confirm (elicitation)."""
    _service(service)
    match answer:
        case AcceptedElicitation(data=Confirm(confirm=True, minutes=m)):
            return f"maintenance for {service} scheduled for {m} minutes"
        case _:
            return f"maintenance for {service} not scheduled ({answer.action})"


async def _sample(text: str) -> Sample:
    msg = SamplingMessage(role="user", content=TextContent(type="text", text=f"Summarise: {text}"))
    return Sample([msg], max_tokens=100)


@mcp.tool(annotations=READ_ONLY)
async def summarize_incident(
    text: str, summary: Annotated[CreateMessageResult, Resolve(_sample)]
) -> str:
    """Summarise an incident with the client's model (sampling)."""
    content = summary.content
    return f"summary: {content.text if isinstance(content, TextContent) else content}"


async def _roots() -> ListRoots:
    return ListRoots()


@mcp.tool(annotations=READ_ONLY)
async def show_roots(roots: Annotated[ListRootsResult, Resolve(_roots)]) -> list[str]:
    """List the client's roots (roots request)."""
    return [str(r.uri) for r in roots.roots]


# --------------------------------------------------------------------------- resources, prompts


@mcp.resource("ops://services", mime_type="application/json")
async def services_resource() -> str:
    """All services and their state."""
    import json

    return json.dumps(SERVICES, sort_keys=True)


@mcp.resource("ops://services/{name}/status")
async def service_status(name: str) -> str:
    """Status of one service."""
    return await get_status(name)


@mcp.prompt()
async def incident_report(service: str, severity: str = "sev2") -> str:
    """Draft an incident report for a service."""
    return f"Write a {severity} incident report for {service}."


@mcp.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
    """Complete service names and severities."""
    if isinstance(ref, PromptReference | ResourceTemplateReference):
        if argument.name in ("service", "name"):
            return Completion(values=[s for s in sorted(SERVICES) if s.startswith(argument.value)])
        if argument.name == "severity":
            return Completion(values=[s for s in ("sev1", "sev2", "sev3")
                                      if s.startswith(argument.value)])
    return None


async def _subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
    SUBSCRIBED.add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
    SUBSCRIBED.discard(str(params.uri))
    return EmptyResult()


# MCPServer serves 2026 listen streams itself; legacy resources/subscribe needs the low-level
# registry (there is no public MCPServer API for it in mcp 2.3).
mcp._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
mcp._lowlevel_server.add_request_handler(
    "resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe
)


def main(argv: list[str] | None = None) -> None:
    """Run over stdio, or Streamable HTTP with ``--http PORT``."""
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on PORT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--root", type=Path, help="sandbox directory for delete_file")
    args = parser.parse_args(argv)
    if args.root:
        ROOT = args.root
    print(f"ops server: sandbox root {ROOT}", file=sys.stderr)
    if args.http:
        mcp.run("streamable-http", host=args.host, port=args.http)
    else:
        mcp.run()


if __name__ == "__main__":
    main()
