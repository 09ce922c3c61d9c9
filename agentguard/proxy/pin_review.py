"""What ``agentguard pins show`` prints: the pinned and the pending definition of a tool, in
full and escaped, and their diff, so an operator approves a definition they have read.

Definitions come from the store, which the agent can write to: each text is checked against
the hash it is kept under before it is shown, and one that does not match is reported as
altered, never shown as if it were the definition.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from agentguard.proxy.pins import NO_HASH, PENDING_PREFIX, text_hash
from agentguard.sanitize import escape_text
from agentguard.store.base import Store

__all__ = ["Definition", "PinReview", "load_review"]

_JSON_PREFIX = "json:"


@dataclass(frozen=True, slots=True)
class Definition:
    """One tool definition as kept in the store.

    Attributes:
        hash: The definition hash (what a pin holds).
        text: The stored text, when it exists and hashes to ``hash``.
        problem: Why the text is not shown (missing or altered), else None.
        altered: The store holds a text under this hash that is not what the hash names.
    """

    hash: str
    text: str | None
    problem: str | None = None
    altered: bool = False

    def lines(self) -> list[str]:
        """The definition as indented JSON, one escaped line per item (never truncated)."""
        if self.text is None:
            return []
        pretty = json.dumps(json.loads(self.text), indent=2, sort_keys=True,
                            ensure_ascii=False)
        return [escape_text(line) for line in pretty.splitlines()]


@dataclass(frozen=True, slots=True)
class PinReview:
    """The pinned and the pending definition of one tool.

    Attributes:
        server: Server name.
        tool: Tool name on that server.
        pinned: The approved definition (None when the tool was never approved).
        pending: The definition of the latest listing that differs from the pin (None when
            nothing is pending).
    """

    server: str
    tool: str
    pinned: Definition | None
    pending: Definition | None

    @property
    def verified(self) -> bool:
        """False when the store holds a text under a hash it does not hash to."""
        return not any(d is not None and d.altered for d in (self.pinned, self.pending))

    def render(self) -> str:
        """The review as text for a terminal: both definitions in full, then the diff."""
        server, tool = escape_text(self.server), escape_text(self.tool)
        out = [f"{server}/{tool}"]
        for label, definition in (("pinned", self.pinned), ("pending", self.pending)):
            if definition is None:
                out.append(f"{label}: none")
                continue
            out.append(f"{label}: {escape_text(definition.hash)}")
            if definition.problem is not None:
                out.append(f"  !! {definition.problem}")
            out.extend("  " + line for line in definition.lines())
        # The diff and the approve hint only for a pending definition one can read.
        pending = self.pending if self.verified and self.pending is not None \
            and self.pending.text is not None else None
        if pending is not None and self.pinned is not None and self.pinned.text is not None:
            out.append("diff (pinned -> pending):")
            out.extend("  " + line for line in difflib.unified_diff(
                self.pinned.lines(), pending.lines(), "pinned", "pending", lineterm="", n=3))
        if pending is not None:
            out.append("to pin the pending definition after reading it: agentguard pins "
                       f"approve {server} {tool} {escape_text(pending.hash)}")
        return "\n".join(out)


async def _definition(store: Store, digest: str) -> Definition:
    text = await store.get_definition(digest)
    if text is None:
        return Definition(digest, None, "the store does not hold this definition's text "
                          "(it was listed before definitions were kept); it cannot be shown")
    expected = digest.removeprefix(_JSON_PREFIX)
    if text_hash(text) != expected:
        return Definition(digest, None, "the text stored under this hash does not hash to "
                          "it: the store was altered; not shown, do not approve", True)
    try:
        json.loads(text)
    except ValueError:
        return Definition(digest, None, "the text stored under this hash is not JSON", True)
    return Definition(digest, text)


async def load_review(store: Store, server: str, tool: str) -> PinReview:
    """The pinned and the pending definition of ``server``/``tool``, checked against their
    hashes."""
    pinned = await store.get_pin(server, tool) or NO_HASH
    pending = await store.get_pin(PENDING_PREFIX + server, tool) or NO_HASH
    return PinReview(
        server, tool,
        await _definition(store, pinned) if pinned else None,
        await _definition(store, pending) if pending and pending != pinned else None)
