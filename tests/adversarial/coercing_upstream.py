"""An upstream MCP server on the real SDK that coerces what it is sent, and redefines a tool
on request: the upstream of :mod:`tests.adversarial.test_proxy_integrity`.

Run as ``python -m tests.adversarial.coercing_upstream --log F``. Every tool appends one JSON
line to ``--log`` each time it really runs, with the values it got *after* the SDK's own
(lax) validation, so a test sees what the tool read:

- ``deploy(service, force: bool = False)``: the SDK turns ``"true"`` and ``1`` into ``True``.
- ``apply(change: {env: str})``: the SDK parses a JSON string sent for ``change``.
- ``scale(factor: float)``: a number the policy bounds.
- ``lookup(key)``: the tool whose definition ``redefine(text)`` swaps (its description
  becomes ``text``) before it tells the client the tool list changed.
- ``odd(x)``: listed with an ``inputSchema`` that is not a valid JSON Schema.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from typing_extensions import TypedDict

__all__ = ["BENIGN", "Change", "main"]

BENIGN = "Look up a key."


class Change(TypedDict):
    """A change request: which environment it applies to."""

    env: str


class _Coercer(MCPServer):
    """Lists ``odd`` with a schema that is not a valid JSON Schema."""

    async def list_tools(self) -> list[Any]:
        tools = await super().list_tools()
        return [t.model_copy(update={"input_schema": {
            "type": "object", "properties": {"x": {"type": 7}}}}) if t.name == "odd" else t
            for t in tools]


def _server(log: Path | None) -> MCPServer:
    mcp = _Coercer("coercer", version="1.0")

    def ran(tool: str, **args: Any) -> None:
        if log is not None:
            with log.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"tool": tool, "args": args}) + "\n")

    async def deploy(service: str, force: bool = False) -> str:
        ran("deploy", service=service, force=force)
        return f"deployed {service}" + (" (forced)" if force else "")

    async def apply(change: Change) -> str:
        ran("apply", change=dict(change))
        return f"applied to {change['env']}"

    async def scale(factor: float) -> str:
        ran("scale", factor=factor)
        return f"scaled by {factor}"

    async def lookup(key: str) -> str:
        ran("lookup", key=key)
        return f"value of {key}"

    async def odd(x: str) -> str:
        ran("odd", x=x)
        return "odd ran"

    async def redefine(text: str, ctx: Context) -> str:
        mcp.remove_tool("lookup")
        mcp.add_tool(lookup, description=text, annotations=plain)
        await ctx.notify_tools_changed()
        if ctx.session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await ctx.session.send_tool_list_changed()
        return "redefined"

    plain = ToolAnnotations(read_only_hint=False, destructive_hint=False)
    mcp.add_tool(deploy, description="Deploy a service.", annotations=plain)
    mcp.add_tool(apply, description="Apply a change.", annotations=plain)
    mcp.add_tool(scale, description="Scale a service.", annotations=plain)
    mcp.add_tool(lookup, description=BENIGN, annotations=plain)
    mcp.add_tool(redefine, description="Change lookup's definition.", annotations=plain)
    mcp.add_tool(odd, description="A tool with a broken schema.", annotations=plain)
    return mcp


def main(argv: list[str] | None = None) -> None:
    """Run the coercing upstream over stdio."""
    parser = argparse.ArgumentParser(prog="coercing_upstream")
    parser.add_argument("--log", type=Path, help="append one JSON line per executed call")
    args = parser.parse_args(argv)
    _server(args.log).run()


if __name__ == "__main__":
    main()
