"""The MCP proxy: step-up authentication in front of any MCP server, for any MCP client.

Run it with ``agentguard proxy --policy P.yaml -- CMD ARGS...`` (stdio), ``--upstream-url``
for a Streamable HTTP upstream, ``--listen HOST:PORT`` to serve Streamable HTTP, or
``--config proxy.yaml`` for several upstreams. See :mod:`agentguard.proxy.config`.

Public API:

- :func:`run_proxy` / :func:`build_guard` — serve a :class:`ProxyConfig`.
- :func:`load_config`, :class:`ProxyConfig`, :class:`UpstreamConfig` — configuration.
- :func:`approve_pin`, :func:`list_pins`, :func:`tool_definition_hash` — tool pinning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentguard import __version__

if TYPE_CHECKING:
    from agentguard.proxy.config import ProxyConfig, UpstreamConfig, load_config
    from agentguard.proxy.pins import PinRow, approve_pin, list_pins, tool_definition_hash
    from agentguard.proxy.runner import build_guard, run_proxy

__all__ = [
    "PinRow",
    "ProxyConfig",
    "UpstreamConfig",
    "__version__",
    "approve_pin",
    "build_guard",
    "list_pins",
    "load_config",
    "run_proxy",
    "tool_definition_hash",
]

# Imported on first use: `python -m agentguard.proxy` starts the upstream before the SDK loads.
_SOURCES = {
    **dict.fromkeys(("ProxyConfig", "UpstreamConfig", "load_config"), "agentguard.proxy.config"),
    **dict.fromkeys(("PinRow", "approve_pin", "list_pins", "tool_definition_hash"),
                    "agentguard.proxy.pins"),
    **dict.fromkeys(("build_guard", "run_proxy"), "agentguard.proxy.runner"),
}


def __getattr__(name: str) -> object:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'agentguard.proxy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value
