"""Approval channels: how a held call reaches a human and the answer comes back."""

from agentguard.channels.base import ApprovalChannel, ChannelAnswer
from agentguard.channels.console import ConsoleChannel
from agentguard.channels.render import render_request, render_status
from agentguard.channels.scripted import ScriptedChannel

__all__ = [
    "ApprovalChannel",
    "ChannelAnswer",
    "ConsoleChannel",
    "ScriptedChannel",
    "render_request",
    "render_status",
]
