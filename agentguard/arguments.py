"""Arguments as the policy sees them, whichever edge built the call."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["fill_schema_defaults"]


def fill_schema_defaults(
    args: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Arguments with the top-level defaults a JSON schema declares filled in.

    The decorator shows the policy a call's arguments with the function's defaults applied;
    edges that only know the tool's JSON schema (adapters, the MCP proxy) do the same, so the
    policy, the approver and the call hash see the same call whichever edge built it.
    """
    out = dict(args)
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if isinstance(props, Mapping):
        for name, prop in props.items():
            if name not in out and isinstance(prop, Mapping) and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
    return out
