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

from agentguard import __version__
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
