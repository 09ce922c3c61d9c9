"""Tool pinning: a rug-pulled tool definition is blocked until a human re-approves it.

The first ``tools/list`` of a server pins a SHA-256 over the canonical JSON of each full tool
object (name, title, description, input and output schema, annotations, icons, ``_meta``). A
later listing whose hash differs marks that tool *changed*: its calls are refused and the
change is audited with both hashes until ``agentguard pins approve SERVER TOOL`` pins the new
hash. A tool that appears after the first listing is *unpinned*: calls carry
``hints.unpinned`` so the policy's unknown-tool requirement applies, until it is approved too.

Pins live in the shared store, so the approval can come from another process while the proxy
runs. Besides ``(server, tool) -> hash`` the store holds two kinds of bookkeeping entries:
``(server, "*")`` marks a server whose first listing was pinned (a server that lists no tools
at first cannot get a free pass later), and ``("~pending/" + server, tool)`` holds the hash
seen but not yet approved, which is what ``pins approve`` pins.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mcp.types import Tool

from agentguard.audit.base import AuditSink
from agentguard.canonical import CanonicalizationError, canonical_bytes
from agentguard.errors import ConflictError
from agentguard.store.base import Store

__all__ = [
    "PinBook",
    "PinRow",
    "PinStatus",
    "approve_pin",
    "list_pins",
    "tool_definition_hash",
]

logger = logging.getLogger(__name__)

SERVER_MARK = "*"
"""Tool key marking that a server's first listing was pinned (not a legal MCP tool name)."""
PENDING_PREFIX = "~pending/"
NO_HASH = ""


def tool_definition_hash(tool: Tool | Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of the full tool object, as it is on the wire.

    A definition that cannot be canonicalised (an integer beyond 2**53, deeper than 64 levels)
    is hashed over sorted-key JSON instead, with a ``json:`` prefix so the two never collide.
    """
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True) \
        if isinstance(tool, Tool) else dict(tool)
    try:
        return hashlib.sha256(canonical_bytes(data)).hexdigest()
    except CanonicalizationError:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "json:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PinStatus:
    """Where a listed tool stands against its pin.

    Attributes:
        state: ``pinned`` (matches), ``changed`` (differs: blocked), ``unpinned`` (new tool).
        hash: Hash of the definition as listed now.
        pinned_hash: Hash in the store, if any.
    """

    state: Literal["pinned", "changed", "unpinned"]
    hash: str
    pinned_hash: str | None = None


class PinBook:
    """Checks listings against the store's pins and records what changed.

    One instance per proxy process; it caches the store's pins per server and re-reads them
    for a blocked or unpinned tool, so an approval given from another process takes effect
    on the next call without a restart.
    """

    def __init__(self, store: Store, audit: AuditSink | None = None) -> None:
        self._store = store
        self._audit = audit
        self._pins: dict[str, dict[str, str]] = {}
        self._reported: set[tuple[str, str, str]] = set()

    async def _load(self, server: str) -> dict[str, str]:
        pins = self._pins.get(server)
        if pins is None:
            pins = {t: h for s, t, h in await self._store.list_pins() if s == server}
            self._pins[server] = pins
        return pins

    async def check_listing(self, server: str, tools: Sequence[Tool]) -> dict[str, PinStatus]:
        """Compare a full listing with the pins; pin it all if it is the server's first."""
        pins = await self._load(server)
        hashes = {tool.name: tool_definition_hash(tool) for tool in tools}
        if SERVER_MARK not in pins:
            for name, digest in hashes.items():
                await self._store.set_pin(server, name, digest)
                pins[name] = digest
            await self._store.set_pin(server, SERVER_MARK, "first-listing")
            pins[SERVER_MARK] = "first-listing"
            logger.info("pinned %d tools of server %r (first listing)", len(hashes), server)
        out: dict[str, PinStatus] = {}
        for name, digest in hashes.items():
            out[name] = await self._status(server, name, digest, pins)
        return out

    async def recheck(self, server: str, tool: str, digest: str) -> PinStatus:
        """Re-read one pin from the store (an approval may have landed meanwhile)."""
        pins = await self._load(server)
        stored = await self._store.get_pin(server, tool)
        if stored:
            pins[tool] = stored
        return await self._status(server, tool, digest, pins)

    async def _status(self, server: str, tool: str, digest: str,
                      pins: dict[str, str]) -> PinStatus:
        pinned = pins.get(tool) or None
        if pinned == digest:
            return PinStatus("pinned", digest, pinned)
        state: Literal["changed", "unpinned"] = "changed" if pinned else "unpinned"
        key = (server, tool, digest)
        if key not in self._reported:
            self._reported.add(key)
            await self._store.set_pin(PENDING_PREFIX + server, tool, digest)
            if state == "changed":
                logger.warning("tool %r of server %r changed definition (pinned %s, now %s); "
                               "blocked until `agentguard pins approve %s %s`",
                               tool, server, pinned[:12], digest[:12], server, tool)
                self._append({"type": "pin.changed", "server": server, "tool": tool,
                              "old_hash": pinned, "new_hash": digest,
                              "reason": "tool definition changed since it was pinned"})
        return PinStatus(state, digest, pinned)

    def _append(self, event: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            self._audit.append(event)
        except Exception:  # the refusal at call time is audited again by the guard
            logger.exception("audit write for %s failed", event["type"])


@dataclass(frozen=True, slots=True)
class PinRow:
    """One line of ``agentguard pins list``.

    Attributes:
        server: Server name.
        tool: Tool name.
        pinned_hash: Approved definition hash ('' when the tool was never approved).
        pending_hash: A differing definition seen since ('' when none).
    """

    server: str
    tool: str
    pinned_hash: str
    pending_hash: str

    @property
    def state(self) -> str:
        """``pinned``, ``changed`` (blocked) or ``new`` (never approved)."""
        if not self.pinned_hash:
            return "new"
        if self.pending_hash and self.pending_hash != self.pinned_hash:
            return "changed"
        return "pinned"


async def list_pins(store: Store, server: str | None = None) -> list[PinRow]:
    """All pinned and pending tools, sorted by server and tool (for ``pins list``)."""
    pinned: dict[tuple[str, str], str] = {}
    pending: dict[tuple[str, str], str] = {}
    for s, t, h in await store.list_pins():
        if t == SERVER_MARK:
            continue
        if s.startswith(PENDING_PREFIX):
            pending[(s.removeprefix(PENDING_PREFIX), t)] = h
        else:
            pinned[(s, t)] = h
    keys = sorted(set(pinned) | {k for k, h in pending.items() if h})
    rows = [PinRow(s, t, pinned.get((s, t), NO_HASH), pending.get((s, t), NO_HASH))
            for s, t in keys if server is None or s == server]
    return rows


async def approve_pin(
    store: Store,
    server: str,
    tool: str,
    *,
    expected_hash: str | None = None,
    audit: AuditSink | None = None,
    approver: str | None = None,
) -> PinRow:
    """Pin the definition last seen for ``server``/``tool`` (``agentguard pins approve``).

    Args:
        store: The store the proxy uses.
        server: Server name.
        tool: Tool name (without namespace).
        expected_hash: When given, approve only if the pending hash is exactly this (or a
            prefix of at least 12 characters), so a definition that changed again after the
            human looked is not approved blindly.
        audit: Sink for the ``pin.approved`` event.
        approver: Who approves (default: the OS user).

    Returns:
        The row after approval.

    Raises:
        ConflictError: nothing is pending for that tool, or the pending hash differs.
    """
    pending = await store.get_pin(PENDING_PREFIX + server, tool)
    current = await store.get_pin(server, tool)
    if not pending:
        state = "already pinned" if current else "unknown"
        raise ConflictError(f"no pending definition for {server}/{tool} ({state}); "
                            "nothing to approve")
    if expected_hash is not None and not (
        pending == expected_hash or (len(expected_hash) >= 12 and pending.startswith(expected_hash))
    ):
        raise ConflictError(f"{server}/{tool} now has definition {pending[:16]}, not "
                            f"{expected_hash[:16]}; look again before approving")
    await store.set_pin(server, tool, pending)
    await store.set_pin(PENDING_PREFIX + server, tool, NO_HASH)
    if audit is not None:
        audit.append({"type": "pin.approved", "server": server, "tool": tool,
                      "old_hash": current, "new_hash": pending,
                      "approver": approver or getpass.getuser()})
    return PinRow(server, tool, pending, NO_HASH)
