"""What the proxy declares to its clients: what its upstreams declare, no more, no less.

A client reads the proxy's capabilities as the server's. Handshake-era ``listChanged`` flags
and ``logging`` are therefore the union of what the live upstreams declare: a proxy that
claimed ``tools.listChanged`` for a server that never sends it, or hid the ``logging`` of one
that has it (answering ``logging/setLevel`` with -32601), would not be the server the client
was configured for. The SDK derives ``logging`` from a registered ``logging/setLevel``
handler, and takes the flags from :class:`~mcp.server.lowlevel.server.NotificationOptions`;
:class:`DeclaredServer` makes those options the default for every transport (the SDK's
Streamable HTTP manager asks with none).

``logging/setLevel`` is forwarded to each handshake-era upstream that declares logging; its
``notifications/message`` come back through :meth:`ProxyCore.log
<agentguard.proxy.core.ProxyCore.log>` to the clients, not to the proxy's stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.types import EmptyResult, ServerCapabilities, SetLevelRequestParams

__all__ = [
    "DeclaredServer",
    "declared_kinds",
    "forward_level",
    "logging_handlers",
    "notification_options",
]

logger = logging.getLogger(__name__)


def _capabilities(core: Any) -> list[ServerCapabilities]:
    return [u.client.server_capabilities for u in core.upstreams.values()
            if u.client is not None and u.client.server_capabilities is not None]


def notification_options(core: Any) -> NotificationOptions:
    """``listChanged`` flags as the upstreams declare them (any upstream declaring one)."""
    caps = _capabilities(core)
    return NotificationOptions(
        prompts_changed=any(c.prompts is not None and bool(c.prompts.list_changed)
                            for c in caps),
        resources_changed=any(c.resources is not None and bool(c.resources.list_changed)
                              for c in caps),
        tools_changed=any(c.tools is not None and bool(c.tools.list_changed) for c in caps))


def declared_kinds(options: NotificationOptions) -> set[str]:
    """The list kinds (``tools``, ``prompts``, ``resources``) whose changes are announced."""
    flags = {"tools": options.tools_changed, "prompts": options.prompts_changed,
             "resources": options.resources_changed}
    return {kind for kind, on in flags.items() if on}


def logging_handlers(core: Any) -> dict[str, Any]:
    """``on_set_logging_level`` for the downstream server, when an upstream declares logging."""
    if not any(c.logging is not None for c in _capabilities(core)):
        return {}

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        core.log_level = params.level  # 2026 upstreams get it with each forwarded call
        await forward_level(core.upstreams.values(), params.level)
        return EmptyResult()

    return {"on_set_logging_level": set_level}


async def forward_level(upstreams: Iterable[Any], level: Any) -> None:
    """Send ``logging/setLevel`` to every connected handshake-era upstream with logging.

    2026-07-28 upstreams have no such request (a level travels with each request there).
    """
    import warnings

    from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

    for upstream in upstreams:
        client = upstream.client
        caps = client.server_capabilities if client is not None else None
        if caps is None or caps.logging is None or upstream.modern:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await upstream.request(lambda c: c.set_logging_level(level))
        except MCPError as exc:
            logger.warning("upstream %r refused logging/setLevel: %s", upstream.name,
                           exc.error.message)


class DeclaredServer(Server[Any]):
    """The SDK's low-level server, declaring the upstreams' ``listChanged`` flags on every
    transport (set :attr:`notification_options` after building it)."""

    notification_options: NotificationOptions = NotificationOptions()

    def create_initialization_options(
        self, notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        """The SDK's options, with the upstreams' flags unless others are given."""
        return super().create_initialization_options(
            notification_options or self.notification_options, experimental_capabilities,
            extensions)
