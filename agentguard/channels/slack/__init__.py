"""Slack approvals: Block Kit messages, HTTP interactivity and Socket Mode.

Needs ``slack_sdk`` (``pip install 'agentguard[slack]'``). Importing this package without it
raises :class:`~agentguard.errors.ConfigError` with that hint.

Typical set-up (tokens from the environment, see :mod:`.config`)::

    settings = SlackSettings.load()
    guard = Guard(policy, store=store, audit=audit,
                  channels=[Fallback(SlackChannel(settings), ConsoleChannel())])

and, to receive the clicks, either ``agentguard serve --slack`` (HTTP; shares the store) or,
in-process and without a public URL, ``async with SlackSocketMode.from_settings(settings,
SlackInteractions.from_settings(settings, store=store, audit=audit)):``.
"""

from __future__ import annotations

try:
    import slack_sdk  # noqa: F401 - presence check only
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    from agentguard.errors import ConfigError

    raise ConfigError(
        "the Slack channel needs the slack_sdk package: pip install 'agentguard[slack]'"
    ) from exc

from agentguard.channels.slack.blocks import (
    approval_route,
    fallback_text,
    mrkdwn_escape,
    outcome_blocks,
    request_blocks,
)
from agentguard.channels.slack.channel import SlackChannel
from agentguard.channels.slack.config import SlackSettings
from agentguard.channels.slack.interactivity import ClickOutcome, SlackInteractions
from agentguard.channels.slack.payloads import Click, Submission
from agentguard.channels.slack.socket_mode import SlackSocketMode

__all__ = [
    "Click",
    "ClickOutcome",
    "SlackChannel",
    "SlackInteractions",
    "SlackSettings",
    "SlackSocketMode",
    "Submission",
    "approval_route",
    "fallback_text",
    "mrkdwn_escape",
    "outcome_blocks",
    "request_blocks",
]
