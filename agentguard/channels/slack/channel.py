"""The Slack approval channel: post a held call, update the message when it settles.

Decisions do not come back through this object: Slack delivers clicks to the interactivity
endpoint or the Socket Mode connection (possibly in another process), which vote on the
shared store; the guard is woken by the store. This keeps one path for every vote, and lets
``agentguard serve --slack`` answer calls held by any number of agent processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from agentguard.channels.base import ChannelAnswer
from agentguard.channels.slack.blocks import fallback_text, outcome_blocks, request_blocks
from agentguard.channels.slack.config import SlackSettings
from agentguard.types import ApprovalRequest

__all__ = ["SlackChannel", "describe_slack_error"]

log = logging.getLogger("agentguard.channels.slack")


def describe_slack_error(exc: BaseException) -> str:
    """A short, secret-free description of a failed Web API call."""
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if exc.response is not None else None
        return f"Slack API error: {error or exc.response.status_code}"
    return f"Slack API unreachable: {type(exc).__name__}: {exc}"


class SlackChannel:
    """Ask approvers in Slack (implements ``ApprovalChannel``; identities are verified).

    Each held call is posted (``chat.postMessage``) with its details, escaped arguments and
    the decision buttons (see :func:`~agentguard.channels.slack.blocks.request_blocks`: a call
    the message cannot show in full is approved only from the modal that shows all of it).
    When the request settles this channel updates the message in place (``chat.update``, the
    one update per decision) with who decided and when, or that it expired. A failed post is
    ``unreachable``: the call is refused unless another channel answers (wrap in
    :class:`~agentguard.channels.fallback.Fallback` to fall back to the console).

    Args:
        settings: Tokens and the conversation to post to (default: from the environment).
        client: A Web API client (default: built from ``settings``).
        channel: Conversation id to post to (default ``settings.channel``).
        name: Channel name (rules may name it in ``channels:``).
        clock: Unix time source.
    """

    verified = True

    def __init__(
        self, settings: SlackSettings | None = None, *, client: WebClient | None = None,
        channel: str | None = None, name: str = "slack",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings is None:
            settings = SlackSettings.load(channel=channel)
        elif channel is not None:
            settings = settings.model_copy(update={"channel": channel})
        settings.require("channel", *(() if client is not None else ("bot_token",)))
        assert settings.channel is not None
        self.settings = settings
        self.channel = settings.channel
        self.client = client if client is not None else settings.web_client()
        self.name = name
        self.clock = clock
        self._messages: dict[str, tuple[str, str]] = {}

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        # The sync client in a worker thread: the async one needs aiohttp.
        return await anyio.to_thread.run_sync(partial(method, **kwargs), abandon_on_cancel=True)

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Post ``request``; yield ``unreachable`` if Slack cannot be reached.

        Votes arrive through the interactivity endpoint or Socket Mode, into the store.
        """
        try:
            response = await self._call(
                self.client.chat_postMessage, channel=self.channel,
                text=fallback_text(request), unfurl_links=False, unfurl_media=False,
                blocks=request_blocks(request, now=self.clock()))
            where = (str(response["channel"]), str(response["ts"]))
        except Exception as exc:
            reason = describe_slack_error(exc)
            log.warning("Slack channel %s unreachable for request %s: %s", self.name,
                        request.id, reason)
            yield ChannelAnswer(kind="unreachable", channel=self.name, reason=reason)
            return
        self._messages[request.id] = where

    async def settled(self, request: ApprovalRequest) -> None:
        """Update the posted message with the outcome (approved, denied, expired...)."""
        where = self._messages.pop(request.id, None)
        if where is None:
            return
        try:
            await self._call(
                self.client.chat_update, channel=where[0], ts=where[1],
                text=fallback_text(request),
                blocks=outcome_blocks(request, now=self.clock()))
        except Exception as exc:
            log.warning("could not update the Slack message of request %s: %s", request.id,
                        describe_slack_error(exc))
