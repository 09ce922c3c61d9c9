"""Slack settings: tokens, signing secret and where to post.

Secrets come from the environment or from a config file, never from the policy (a policy is
reviewed and committed; tokens are not). Environment variables win over the file::

    AGENTGUARD_SLACK_BOT_TOKEN       xoxb-...  posts, updates and ephemeral replies
    AGENTGUARD_SLACK_SIGNING_SECRET  verifies HTTP interactivity requests (HMAC v0)
    AGENTGUARD_SLACK_APP_TOKEN       xapp-...  Socket Mode (no public URL needed)
    AGENTGUARD_SLACK_CHANNEL         channel id (C...) or user id (U..., a DM) to post to
    AGENTGUARD_SLACK_TEAM_ID         optional: accept clicks from this workspace only
    AGENTGUARD_SLACK_API_URL         optional: Web API base URL (tests point it at a fake)
    AGENTGUARD_SLACK_CONFIG          optional: path of a YAML file with the same keys

The file holds the keys in lower case without the prefix (``bot_token: xoxb-...``), at the
top level or under ``slack:``. Because it holds secrets it must not be readable by group or
others (``chmod 600``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from slack_sdk import WebClient

from agentguard.errors import ConfigError

__all__ = ["ENV_PREFIX", "SlackSettings"]

ENV_PREFIX = "AGENTGUARD_SLACK_"
_KEYS = ("bot_token", "signing_secret", "app_token", "channel", "team_id", "api_url", "timeout")


class SlackSettings(BaseModel):
    """Everything the Slack channel and its endpoints need.

    Attributes:
        bot_token: Bot token (``xoxb-``) used for ``chat.postMessage``, ``chat.update`` and
            ``chat.postEphemeral``.
        signing_secret: Signing secret of the Slack app; verifies interactivity requests.
        app_token: App-level token (``xapp-``, scope ``connections:write``) for Socket Mode.
        channel: Channel id, or a user id for a direct message, that approval requests go to.
        team_id: When set, clicks from any other workspace are ignored.
        api_url: Slack Web API base URL.
        timeout: Seconds to wait for one Web API call.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    channel: str | None = None
    team_id: str | None = None
    api_url: str = "https://slack.com/api/"
    timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("xoxb-", "xoxp-")):
            raise ValueError("must be a bot token (xoxb-...); the xapp- token is app_token")
        return value

    @field_validator("app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token (xapp-...) with connections:write")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value if value.endswith("/") else value + "/"

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *,
        environ: Mapping[str, str] | None = None, **overrides: Any,
    ) -> SlackSettings:
        """Read the config file (if any), then the environment, then ``overrides``.

        Args:
            path: YAML config file; default ``$AGENTGUARD_SLACK_CONFIG`` (none if unset).
            environ: Environment to read (default ``os.environ``).
            **overrides: Values given in code (e.g. ``channel="C123"``), applied last.

        Raises:
            ConfigError: the file is unreadable, readable by others, or a value is invalid.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        path = path or env.get(ENV_PREFIX + "CONFIG") or None
        if path:
            data.update(_read_file(Path(path)))
        for key in _KEYS:
            value = env.get(ENV_PREFIX + key.upper())
            if value:
                data[key] = value
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid Slack settings: {problems}") from None

    def require(self, *fields: str) -> None:
        """Raise :class:`ConfigError` naming the environment variables of missing fields."""
        missing = [f for f in fields if getattr(self, f) in (None, "")]
        if missing:
            names = ", ".join(ENV_PREFIX + f.upper() for f in missing)
            raise ConfigError(
                f"Slack is not configured: set {names} (environment or the file named by "
                f"{ENV_PREFIX}CONFIG; never in the policy)"
            )

    def web_client(self, token: str = "bot") -> WebClient:
        """A ``slack_sdk.WebClient`` for the bot token (or ``token="app"``: the app token)."""
        secret = self.bot_token if token == "bot" else self.app_token
        return WebClient(
            token=secret.get_secret_value() if secret is not None else None,
            base_url=self.api_url, timeout=int(self.timeout) or 1,
        )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the Slack config file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the Slack config file {path} holds secrets but group or others may access it; "
            f"run: chmod 600 {path}"
        )
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the Slack config file {path} is not valid YAML: {exc}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("slack"), Mapping):
        loaded = loaded["slack"]
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"the Slack config file {path} must be a mapping of settings")
    return dict(loaded)
