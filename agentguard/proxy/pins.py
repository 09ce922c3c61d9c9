"""Tool pinning: a rug-pulled tool definition is blocked until a human re-approves it.

The first ``tools/list`` of a server pins a SHA-256 over the canonical JSON of each full tool
object (name, title, description, input and output schema, annotations, icons, ``_meta``). A
later listing whose hash differs marks that tool *changed*: its calls are refused and the
change is audited with both hashes until ``agentguard pins approve SERVER TOOL`` pins the new
hash. A tool that appears after the first listing is *unpinned*: calls carry
``hints.unpinned`` so the policy's unknown-tool requirement applies, until it is approved too.
Every definition listed is kept in the store under its hash (``pins show`` prints the pinned
and the pending one, and their diff); ``pins approve`` takes the hash the operator reviewed.

Pins live in the shared store, so the approval can come from another process while the proxy
runs. Besides ``(server, tool) -> hash`` the store holds two kinds of bookkeeping entries:
``(server, "*")`` marks a server whose first listing was pinned (a server that lists no tools
at first cannot get a free pass later), and ``("~pending/" + server, tool)`` holds the hash
seen in the latest listing but not approved, which is what ``pins approve`` pins.
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
from agentguard.proxy.naming import NAMES
from agentguard.store.base import Store

__all__ = [
    "PinBook",
    "PinRow",
    "PinStatus",
    "approve_pin",
    "definition_text",
    "list_pins",
    "text_hash",
    "tool_definition_hash",
]

logger = logging.getLogger(__name__)

SERVER_MARK = "*"
"""Tool key marking that a server's first listing was pinned (not a legal MCP tool name)."""
PENDING_PREFIX = "~pending/"
NO_HASH = ""


def definition_text(tool: Tool | Mapping[str, Any]) -> tuple[str, str]:
    """The hash of a tool definition and the exact text it is computed over.

    The text is the canonical JSON of the full tool object, as it is on the wire; the hash is
    its SHA-256 (hex). A definition that cannot be canonicalised (an integer beyond 2**53,
    deeper than 64 levels) is written as sorted-key JSON instead, and its hash carries a
    ``json:`` prefix so the two never collide. The store keeps the text under the hash
    (:meth:`~agentguard.store.base.Store.put_definition`) for ``pins show``.
    """
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True) \
        if isinstance(tool, Tool) else dict(tool)
    try:
        text = canonical_bytes(data).decode("utf-8")
        prefix = ""
    except CanonicalizationError:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prefix = "json:"
    return prefix + text_hash(text), text


def text_hash(text: str) -> str:
    """SHA-256 (hex) of a definition text, without the ``json:`` prefix."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tool_definition_hash(tool: Tool | Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of the full tool object (see
    :func:`definition_text`)."""
    return definition_text(tool)[0]


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
        #: What this process last wrote to each pending slot (the store's copy at start).
        self._pending: dict[str, dict[str, str]] = {}
        #: Definition hashes already written to the store by this process.
        self._kept: set[str] = set()

    async def _load(self, server: str) -> dict[str, str]:
        pins = self._pins.get(server)
        if pins is None:
            rows = await self._store.list_pins()
            pins = {t: h for s, t, h in rows if s == server}
            self._pins[server] = pins
            self._pending[server] = {t: h for s, t, h in rows if s == PENDING_PREFIX + server}
        return pins

    async def check_listing(self, server: str, tools: Sequence[Tool]) -> dict[str, PinStatus]:
        """Compare a full listing with the pins; pin it all if it is the server's first.

        Every definition listed is kept in the store under its hash, so an operator can read
        what a hash stands for (``agentguard pins show``) before approving it.
        """
        pins = await self._load(server)
        hashes: dict[str, str] = {}
        for tool in tools:
            digest, text = definition_text(tool)
            hashes[tool.name] = digest
            if digest not in self._kept:
                await self._store.put_definition(digest, text)
                self._kept.add(digest)
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
        # The pending slot follows the latest listing (A, then B, then A leaves A pending,
        # and a listing that matches the pin again leaves nothing pending): what `pins
        # approve` pins is what the upstream serves now, never an earlier variant.
        pending = self._pending.setdefault(server, {})
        pinned = pins.get(tool) or None
        if pinned == digest:
            if pending.get(tool):
                await self._store.set_pin(PENDING_PREFIX + server, tool, NO_HASH)
                pending[tool] = NO_HASH
            return PinStatus("pinned", digest, pinned)
        state: Literal["changed", "unpinned"] = "changed" if pinned else "unpinned"
        if pending.get(tool) != digest:
            await self._store.set_pin(PENDING_PREFIX + server, tool, digest)
            pending[tool] = digest
            if state == "changed":
                logger.warning("tool %r of server %r changed definition (pinned %s, now %s); "
                               "blocked until reviewed (`agentguard pins show %s %s`) and approved",
                               tool, server, (pinned or "")[:12], digest[:12], server, tool)
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
        if t == SERVER_MARK or s == NAMES:
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
    expected_hash: str,
    audit: AuditSink | None = None,
    approver: str | None = None,
) -> PinRow:
    """Pin the definition last seen for ``server``/``tool`` (``agentguard pins approve``).

    Args:
        store: The store the proxy uses.
        server: Server name.
        tool: Tool name (without namespace).
        expected_hash: The full hash of the definition the human reviewed (``pins show``):
            approved only if it is exactly the pending one, so a definition that changed
            after the human looked is never approved blindly.
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
    if pending != expected_hash.strip().lower():
        raise ConflictError(
            f"the pending definition of {server}/{tool} is {pending}, not the "
            f"{expected_hash.strip()[:80]!r} you reviewed; it changed (or the hash is "
            f"incomplete): review it again with `agentguard pins show {server} {tool}`")
    await store.set_pin(server, tool, pending)
    await store.set_pin(PENDING_PREFIX + server, tool, NO_HASH)
    if audit is not None:
        audit.append({"type": "pin.approved", "server": server, "tool": tool,
                      "old_hash": current, "new_hash": pending,
                      "approver": approver or getpass.getuser()})
    return PinRow(server, tool, pending, NO_HASH)
