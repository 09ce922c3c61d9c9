"""The upstream MCP server behind the conformance suite's MCP proxy edge.

It serves the suite's own tools (built by the suite's ``make_tools``, so the proxy fronts the
very functions every other edge wraps) over stdio, as a plain ``MCPServer`` with bare tool
names. The proxy runs it as a child process, so each run is recorded as one line in a file
the test reads back, instead of in the test process's list.

Run it::

    python -m tests.adapters.proxy_edge_upstream MODULE:FUNCTION RAN_FILE

where ``MODULE:FUNCTION`` names ``make_tools(ran: list[str]) -> dict[str, Callable]``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsIndex

from mcp.server import MCPServer
from mcp.types import ToolAnnotations

__all__ = ["NEUTRAL", "RanFile", "load", "main"]

# MCP cannot say "no annotations": an absent hint means its spec default (destructive,
# open-world), which the proxy rightly applies. The decorator's tools declare nothing, so the
# upstream declares the one hint that adds no requirement: read-only points to the lowest
# class, and the proxy's upstream is untrusted (see proxy_edge.SERVER), so annotations can
# only ever raise a class there, never set or lower one.
NEUTRAL = ToolAnnotations(read_only_hint=True)


class RanFile(list[str]):
    """A run log that also appends each entry to a file (flushed before the tool answers)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def append(self, name: str) -> None:
        super().append(name)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(name + "\n")

    def insert(self, index: SupportsIndex, name: str) -> None:  # pragma: no cover
        raise TypeError("the run log is append-only")


def load(spec: str) -> Callable[..., Any]:
    """The object named by ``package.module:attr.path``."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> None:
    """Serve the tools over stdio until the proxy closes the pipe."""
    spec, ran_path = argv if argv is not None else sys.argv[1:]
    server = MCPServer("local")
    for fn in load(spec)(RanFile(Path(ran_path))).values():
        server.add_tool(fn, annotations=NEUTRAL)
    server.run()


if __name__ == "__main__":
    main()
