"""A test server whose tool asks the client mid-call and notes when the call is cancelled.

``ask_and_wait`` elicits a confirmation (pushed in the handshake era), then answers; a
cancellation while it waits is written to ``--cancel-log``. ``wait`` only sleeps.
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import BaseModel

mcp = MCPServer("asking", version="1.0")
CANCEL_LOG: list[str] = []


class Go(BaseModel):
    """The confirmation form."""

    go: bool


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
async def ask_and_wait(ctx: Context) -> str:
    """Ask the client whether to go on, then say what it answered."""
    try:
        answer = await ctx.elicit("Go on?", Go)
    except anyio.get_cancelled_exc_class():
        for path in CANCEL_LOG:
            with open(path, "a", encoding="utf-8") as log:
                log.write("ask cancelled\n")
        raise
    return f"answered {answer.action}"


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
async def wait(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"waited {seconds}"


def main() -> None:
    """Run over stdio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cancel-log", metavar="PATH", help="file noting cancelled calls")
    args = parser.parse_args()
    if args.cancel_log:
        CANCEL_LOG.append(args.cancel_log)
    mcp.run()


if __name__ == "__main__":
    main()
