"""Approval channels: how a held call reaches a human and the answer comes back.

Channels are imported on first use, so importing the core stays cheap; ``SlackChannel``
needs the ``slack`` extra.
"""

from importlib import import_module
from typing import Any

from agentguard.channels.base import ApprovalChannel, ChannelAnswer

__all__ = [
    "ApprovalChannel",
    "ChannelAnswer",
    "ConsoleChannel",
    "Fallback",
    "ScriptedChannel",
    "SlackChannel",
    "TerminalChannel",
    "WebhookChannel",
    "render_request",
    "render_status",
]

_LAZY = {
    "ConsoleChannel": "agentguard.channels.console",
    "Fallback": "agentguard.channels.fallback",
    "ScriptedChannel": "agentguard.channels.scripted",
    "SlackChannel": "agentguard.channels.slack",
    "TerminalChannel": "agentguard.channels.terminal",
    "WebhookChannel": "agentguard.channels.webhook",
    "render_request": "agentguard.channels.render",
    "render_status": "agentguard.channels.render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentguard.channels' has no attribute {name!r}")
    return getattr(import_module(module), name)
