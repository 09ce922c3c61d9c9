"""``policy explain`` for a tool behind ``agentguard proxy``: the tool's hints as the proxy
counts them, and what the proxy then does with the call.

The proxy classifies an MCP tool with its annotations as hints, a missing hint counting as
the spec's default (destructive, open-world); a call the policy allows whatever its arguments
is forwarded without consulting the guard; a tool whose definition changed since it was
pinned is refused whatever the policy says, and a tool listed after the first pinning gets
the policy's unknown-tool requirement. Explain reproduces each of these from the same
functions the proxy uses (:func:`agentguard.proxy.catalog.hints_for`,
:func:`agentguard.proxy.relay.may_skip_guard`), so the two cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from agentguard.types import ToolCall, ToolHints

__all__ = ["ProxyView", "proxy_view"]

_ACTIONS = {"allow": "forwarded (the guard allows it)",
            "require_approval": "held until a human approves",
            "require_reauth": "held until a human re-authenticates",
            "deny": "refused"}


@dataclass(frozen=True)
class ProxyView:
    """An MCP tool as the proxy sees it.

    Attributes:
        hints: Its hints, as the proxy builds them.
        hints_from: Where they came from (given annotations, or the pinned definition).
        pin: ``pinned``, ``unpinned`` (listed after the first pinning, never approved),
            ``changed`` (differs from its pin) or ``unknown`` (annotations were given).
    """

    hints: ToolHints
    hints_from: str
    pin: str = "unknown"

    def verdict(self, policy: Any, call: ToolCall, decision: str) -> dict[str, Any]:
        """What the proxy does with ``call`` given the policy's ``decision`` kind."""
        from agentguard.proxy.catalog import Entry
        from agentguard.proxy.pins import PinStatus
        from agentguard.proxy.relay import Skip, may_skip_guard

        # The proxy's one rule for skipping the guard; given annotations stand for a pinned
        # definition.
        state = "pinned" if self.pin == "unknown" else self.pin
        entry = Entry(call.server, call.tool, call.tool, _tool(call.tool, None), self.hints,
                      PinStatus(state, "-" * 64, None))  # type: ignore[arg-type]
        if self.pin == "changed":
            action, summary = "refused", (
                f"refused whatever the policy says: the definition of {call.tool!r} changed "
                f"since it was pinned (`agentguard pins show {call.server} {call.tool}`)")
        elif isinstance(may_skip_guard(policy, entry), Skip):
            action, summary = "forwarded", (
                "forwarded without the guard: the policy allows every call to this tool "
                "whatever its arguments and context")
        else:
            action = {"allow": "forwarded"}.get(decision, "refused" if decision == "deny"
                                                else "held")
            summary = _ACTIONS.get(decision, decision)
        return {"action": action, "summary": summary, "pin": self.pin,
                "hints_from": self.hints_from, "hints": _hints_json(self.hints)}


def _hints_json(hints: ToolHints) -> dict[str, Any]:
    out = asdict(hints)
    out["labels"] = sorted(hints.labels)
    return out


def _tool(name: str, annotations: dict[str, Any] | None) -> Any:
    from mcp.types import Tool

    return Tool.model_validate({"name": name, "inputSchema": {"type": "object"},
                                **({"annotations": annotations} if annotations else {})})


def proxy_view(server: str, tool: str, annotations: str | None,
               store: str | None) -> ProxyView:
    """The tool's hints from ``annotations`` (JSON), else from its definition in ``store``.

    Raises:
        ValueError: the annotations are not a JSON object of MCP annotations, or the store
            holds no readable definition of the tool.
    """
    from pydantic import ValidationError

    from agentguard.proxy.catalog import hints_for

    if annotations is not None:
        try:
            data = json.loads(annotations)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return ProxyView(hints_for(_tool(tool, data)), "the annotations given")
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"--annotations: MCP tool annotations as a JSON object, e.g. "
                             f'{{"readOnlyHint": true}}: {exc}') from None
    from agentguard.cli.runtime import run_with_store
    from agentguard.proxy.pin_review import load_review
    from agentguard.settings import store_url

    review = run_with_store(store_url(store or None),
                            lambda s: load_review(s, server, tool))
    if not review.verified:
        raise ValueError(f"the store's definition of {server}/{tool} does not match its hash "
                         "(the store was altered)")
    pinned, pending = review.pinned, review.pending
    if pinned is not None and pinned.text is not None:
        state = "changed" if pending is not None else "pinned"
        text = pinned.text
    elif pinned is None and pending is not None and pending.text is not None:
        state, text = "unpinned", pending.text
    else:
        raise ValueError(f"the store holds no definition of {server}/{tool}: list the tools "
                         "through the proxy first, or give --annotations")
    definition = _tool(tool, None).model_validate_json(text)
    return ProxyView(hints_for(definition, unpinned=state == "unpinned"),
                     f"its {'pending' if state == 'unpinned' else 'pinned'} definition in "
                     "the store", state)
