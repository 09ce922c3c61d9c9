"""The proxy's view of what its upstreams offer: exposed names, hints, pins, collisions.

Tools and prompts get exposed names (``namespace__name``, or the bare name for a server
without a namespace). Every call is routed through this table, never by splitting strings, so
a name that two sources claim can be refused instead of silently going to one of them: the
source that held the name before keeps it, every newcomer is refused (and when nobody held it
before, as at start-up, all claimants are refused).

Hints come from the cached listing's annotations, with the MCP spec defaults for what a tool
does not say (``readOnlyHint`` false, ``destructiveHint`` true, ``idempotentHint`` false,
``openWorldHint`` true). Whether a hint may lower a class is the guard's business, not ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mcp.types import Prompt, Tool

from agentguard.proxy.config import NAMESPACE_SEPARATOR
from agentguard.proxy.pins import PinStatus
from agentguard.types import ToolHints

__all__ = ["Catalog", "Collision", "Entry", "NameTable", "exposed_name", "hints_for"]

T = TypeVar("T", Tool, Prompt)


def exposed_name(namespace: str, name: str) -> str:
    """``namespace__name``, or ``name`` when the namespace is empty."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def hints_for(tool: Tool, *, unpinned: bool = False) -> ToolHints:
    """ToolHints from a tool's annotations, with the spec defaults for what it leaves out."""
    ann = tool.annotations
    read_only = ann.read_only_hint if ann and ann.read_only_hint is not None else False
    destructive = ann.destructive_hint if ann and ann.destructive_hint is not None else True
    idempotent = ann.idempotent_hint if ann and ann.idempotent_hint is not None else False
    open_world = ann.open_world_hint if ann and ann.open_world_hint is not None else True
    return ToolHints(read_only=read_only, destructive=destructive, idempotent=idempotent,
                     open_world=open_world, unpinned=unpinned)


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One upstream tool or prompt under its exposed name.

    Attributes:
        server: Upstream server name.
        name: Name on the upstream.
        exposed: Name the client sees.
        item: The upstream definition.
        hints: Tool hints (tools only).
        pin: Pin status (tools only).
    """

    server: str
    name: str
    exposed: str
    item: T
    hints: ToolHints | None = None
    pin: PinStatus | None = None

    def public(self) -> T:
        """The definition as the client sees it (renamed when namespaced)."""
        if self.exposed == self.name:
            return self.item
        return self.item.model_copy(update={"name": self.exposed})


@dataclass(frozen=True, slots=True)
class Collision:
    """An exposed name more than one source claims; calls to it are refused.

    Attributes:
        exposed: The contested name.
        claimants: ``server/name`` of every source claiming it.
        holder: The entry that keeps the name (None when nobody held it before).
    """

    exposed: str
    claimants: tuple[str, ...]
    holder: Entry[Tool] | Entry[Prompt] | None = None

    def message(self) -> str:
        """Clear text for the refusal and the log."""
        who = ", ".join(self.claimants)
        return (f"name collision: {self.exposed!r} is claimed by {who}; refusing it rather "
                "than letting one server shadow another (give a server its own `namespace` "
                "in the proxy config)")


@dataclass
class NameTable(Generic[T]):
    """Exposed name -> entry for one kind of item (tools or prompts), across all servers."""

    by_server: dict[str, list[Entry[T]]] = field(default_factory=dict)
    names: dict[str, Entry[T]] = field(default_factory=dict)
    collisions: dict[str, Collision] = field(default_factory=dict)

    def replace(self, server: str, entries: Sequence[Entry[T]]) -> list[Collision]:
        """Swap in a server's new listing; return collisions that are new since last time."""
        previous = self.names
        self.by_server[server] = list(entries)
        claims: dict[str, list[Entry[T]]] = {}
        for items in self.by_server.values():
            for entry in items:
                claims.setdefault(entry.exposed, []).append(entry)
        names: dict[str, Entry[T]] = {}
        collisions: dict[str, Collision] = {}
        for exposed, claimants in claims.items():
            if len(claimants) == 1:
                names[exposed] = claimants[0]
                continue
            held = previous.get(exposed)
            holder = next((c for c in claimants if held is not None and c.server == held.server
                           and c.name == held.name), None)
            same_server_twice = holder is not None and sum(
                c.server == holder.server and c.name == holder.name for c in claimants) > 1
            if holder is not None and not same_server_twice:
                names[exposed] = holder
            else:
                holder = None
            collisions[exposed] = Collision(
                exposed, tuple(sorted(f"{c.server}/{c.name}" for c in claimants)), holder)
        fresh = [c for n, c in collisions.items() if n not in self.collisions]
        self.names, self.collisions = names, collisions
        return fresh

    def drop(self, server: str) -> None:
        """Forget a server (its upstream is gone for good)."""
        self.replace(server, [])
        del self.by_server[server]

    def listing(self) -> list[Entry[T]]:
        """Entries the client may see, in server then upstream order."""
        out: list[Entry[T]] = []
        for items in self.by_server.values():
            out.extend(e for e in items if self.names.get(e.exposed) is e)
        return out


class Catalog:
    """Tools and prompts of every upstream under their exposed names."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.tools: NameTable[Tool] = NameTable()
        self.prompts: NameTable[Prompt] = NameTable()
        self.listed: set[str] = set()

    def set_tools(self, server: str, tools: Iterable[Tool],
                  pins: dict[str, PinStatus]) -> list[Collision]:
        """Record a server's full tool listing with its pin statuses."""
        ns = self.namespaces[server]
        entries = []
        for tool in tools:
            pin = pins.get(tool.name)
            entries.append(Entry(server, tool.name, exposed_name(ns, tool.name), tool,
                                 hints_for(tool, unpinned=pin is not None and
                                           pin.state == "unpinned"), pin))
        self.listed.add(server)
        return self.tools.replace(server, entries)

    def set_prompts(self, server: str, prompts: Iterable[Prompt]) -> list[Collision]:
        """Record a server's full prompt listing."""
        ns = self.namespaces[server]
        return self.prompts.replace(
            server, [Entry(server, p.name, exposed_name(ns, p.name), p) for p in prompts])

    def tool(self, exposed: str) -> Entry[Tool] | Collision | None:
        """The tool behind an exposed name, the collision that blocks it, or None."""
        return self.tools.names.get(exposed) or self.tools.collisions.get(exposed)

    def prompt(self, exposed: str) -> Entry[Prompt] | Collision | None:
        """The prompt behind an exposed name, the collision that blocks it, or None."""
        return self.prompts.names.get(exposed) or self.prompts.collisions.get(exposed)

    def visible_tools(self) -> list[Tool]:
        """What ``tools/list`` shows: no collided names, no tools whose definition changed.

        A changed tool is hidden so the model never reads a rug-pulled description; a call to
        it is refused with a message naming ``agentguard pins approve``.
        """
        return [e.public() for e in self.tools.listing()
                if e.pin is None or e.pin.state != "changed"]
