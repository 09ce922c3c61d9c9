"""A small upstream that shows whether a proxy is faithful from the first message.

It calls itself ``faithful-demo`` (its serverInfo.name; ``$FAITHFUL_NAME`` to change it),
asks the client for its roots as soon as the client says ``notifications/initialized`` (as the
filesystem server does) and keeps what it got, declares logging (``--no-logging``: does not)
and ``tools.listChanged`` only with ``--list-changed``, and logs at two levels inside its
tool. Run over stdio::

    python tests/proxy/servers/faithful_server.py [--no-logging] [--list-changed]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.types import (
    CallToolResult,
    EmptyResult,
    ListToolsResult,
    NotificationParams,
    SetLevelRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

STATE: dict[str, Any] = {"roots": "not asked", "level": None}
ROOTS_DONE = anyio.Event()
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
TOOLS = [Tool(name="report", description="What the server saw: roots at start, log level.",
              input_schema={"type": "object", "properties": {}}, annotations=READ_ONLY),
         Tool(name="chatty", description="Logs at debug and warning, then answers.",
              input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
              annotations=READ_ONLY)]


async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
    return ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: Any) -> CallToolResult:
    if params.name == "report":
        with anyio.move_on_after(20):
            await ROOTS_DONE.wait()
        text = f"roots at start: {STATE['roots']}; level: {STATE['level']}"
    else:
        for level in ("debug", "warning"):
            await ctx.session.send_log_message(level, {"said": (params.arguments or {}).get(
                "text"), "at": level}, logger="chatty", related_request_id=ctx.request_id)
        text = f"chatty done at level {STATE['level']}"
    return CallToolResult(content=[TextContent(type="text", text=text)])


async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
    STATE["level"] = params.level
    return EmptyResult()


async def initialized(ctx: Any, params: Any) -> None:
    STATE["roots"] = "asking"
    try:
        with anyio.fail_after(20):
            result = await ctx.session.list_roots()
        STATE["roots"] = ",".join(str(r.uri) for r in result.roots) or "none"
    except Exception as exc:
        STATE["roots"] = f"error: {exc}"
    finally:
        ROOTS_DONE.set()


def build(*, logging: bool) -> Server[Any]:
    kwargs: dict[str, Any] = {"on_set_logging_level": set_level} if logging else {}
    name = os.environ.get("FAITHFUL_NAME", "faithful-demo")
    server: Server[Any] = Server(name, version="0.1", on_list_tools=list_tools,
                                 on_call_tool=call_tool, **kwargs)
    server.add_notification_handler("notifications/initialized", NotificationParams,
                                    initialized)
    return server


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-logging", action="store_true")
    parser.add_argument("--list-changed", action="store_true")
    args = parser.parse_args(argv)
    server = build(logging=not args.no_logging)
    options = server.create_initialization_options(
        NotificationOptions(tools_changed=args.list_changed))
    async with stdio_server() as (read, write):
        await server.run(read, write, options)


if __name__ == "__main__":
    anyio.run(main)
