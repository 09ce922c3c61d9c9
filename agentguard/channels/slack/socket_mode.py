"""Receive Slack clicks over Socket Mode: no public URL needed.

Uses ``slack_sdk``'s built-in Socket Mode client (no extra dependency). The app-level token
(``xapp-``) opens the websocket through ``apps.connections.open``; that authenticated
connection is what vouches for the envelopes (Slack does not sign them). Each interactive
envelope is acknowledged at once, de-duplicated by envelope id (Slack re-delivers envelopes
it thinks were not acknowledged), then handed to the same
:class:`~agentguard.channels.slack.interactivity.SlackInteractions` as the HTTP endpoint.
"""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from agentguard.channels.slack.config import SlackSettings
from agentguard.channels.slack.interactivity import SlackInteractions
from agentguard.errors import ConfigError

__all__ = ["SlackSocketMode"]

log = logging.getLogger("agentguard.channels.slack")


class SlackSocketMode:
    """A Socket Mode connection feeding clicks to ``interactions``; an async context manager.

    Example::

        async with SlackSocketMode(interactions, app_token=token):
            ...  # clicks are processed while the block runs (e.g. the guard waits)

    Args:
        interactions: Turns clicks into votes (its client and store are used).
        app_token: App-level token (``xapp-``, scope ``connections:write``).
        client: Web API client used for ``apps.connections.open`` (default: the one of
            ``interactions``; only its base URL matters, the app token is sent explicitly).
        connect_timeout: Seconds to wait for the connection.
    """

    def __init__(
        self, interactions: SlackInteractions, *, app_token: str,
        client: WebClient | None = None, connect_timeout: float = 10.0,
    ) -> None:
        if not app_token.startswith("xapp-"):
            raise ConfigError("Socket Mode needs an app-level token (xapp-...)")
        self.interactions = interactions
        self._app_token = app_token
        self._client = client or interactions.client
        self.connect_timeout = connect_timeout
        self._socket: SocketModeClient | None = None
        self._portal: BlockingPortal | None = None

    @classmethod
    def from_settings(
        cls, settings: SlackSettings, interactions: SlackInteractions
    ) -> SlackSocketMode:
        """Build from settings (app token required)."""
        settings.require("app_token")
        assert settings.app_token is not None
        return cls(interactions, app_token=settings.app_token.get_secret_value(),
                   client=settings.web_client())

    async def __aenter__(self) -> SlackSocketMode:
        portal = BlockingPortal()
        await portal.__aenter__()
        self._portal = portal
        try:
            await self._connect()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def run_forever(self) -> None:
        """Process clicks until cancelled (``agentguard serve --socket-mode``)."""
        async with self:
            await anyio.sleep(math.inf)

    @property
    def connected(self) -> bool:
        """True while the websocket is up."""
        return self._socket is not None and self._socket.is_connected()

    async def _connect(self) -> None:
        socket = SocketModeClient(app_token=self._app_token, web_client=self._client,
                                  logger=log, auto_reconnect_enabled=True)
        socket.socket_mode_request_listeners.append(self._on_request)
        self._socket = socket
        try:
            await anyio.to_thread.run_sync(socket.connect)
        except Exception as exc:
            raise ConfigError(f"Slack Socket Mode could not connect: {type(exc).__name__}: "
                              f"{exc}") from None
        with anyio.move_on_after(self.connect_timeout):
            while not socket.is_connected():
                await anyio.sleep(0.05)
        if not socket.is_connected():
            raise ConfigError("Slack Socket Mode could not connect (handshake failed)")
        log.info("Slack Socket Mode connected")

    async def _shutdown(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await anyio.to_thread.run_sync(socket.close)
        portal, self._portal = self._portal, None
        if portal is not None:
            await portal.__aexit__(None, None, None)

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        """Called in a Socket Mode worker thread for each envelope."""
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return
        portal = self._portal
        if portal is None:
            return
        try:
            portal.call(self._process, request.envelope_id, request.payload)
        except Exception:
            log.exception("processing a Slack Socket Mode envelope failed")

    async def _process(self, envelope_id: str, payload: Any) -> None:
        now = self.interactions.clock()
        if not self.interactions.replay_cache.claim(f"envelope:{envelope_id}", now=now):
            log.warning("ignored a re-delivered Socket Mode envelope %s", envelope_id)
            return
        await self.interactions.process(payload)
