"""Guard the tools of an MCP server built in your own process (runs offline: the client
connects in-process; ``mcp.run()`` would serve the same guarded server over stdio).

    python examples/adapters/mcp_server.py [--ask]
"""

from __future__ import annotations

import anyio
from example_guard import make_guard, print_audit
from mcp import Client
from mcp.server import MCPServer
from mcp.types import TextContent, ToolAnnotations

from agentguard.adapters.mcp import RunContext, guard_server

server = MCPServer("files")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def list_files(folder: str) -> str:
    """List a folder."""
    return f"{folder}: a.txt b.txt"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


async def main() -> None:
    guard = make_guard()
    guard_server(server, guard=guard,
                 run=RunContext(principal="agent:desktop", session_id="demo"))
    async with Client(server) as client:
        for name, args in [("list_files", {"folder": "/tmp"}),
                           ("delete_file", {"path": "/etc/shadow"}),
                           ("delete_file", {"path": "/tmp/b.txt"})]:
            result = await client.call_tool(name, args)
            block = result.content[0]
            text = block.text if isinstance(block, TextContent) else block
            print(f"  {name}{args} -> {'isError: ' if result.is_error else ''}{text}")
    print_audit(guard)


if __name__ == "__main__":
    anyio.run(main)
