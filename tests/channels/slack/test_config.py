"""Slack settings come from the environment or a private file, and the package loads lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard.channels.slack import SlackSettings
from agentguard.errors import ConfigError

ENV = {
    "AGENTGUARD_SLACK_BOT_TOKEN": "xoxb-from-env",
    "AGENTGUARD_SLACK_SIGNING_SECRET": "env-secret",
    "AGENTGUARD_SLACK_APP_TOKEN": "xapp-from-env",
    "AGENTGUARD_SLACK_CHANNEL": "C0ENV",
}


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_settings_from_the_environment() -> None:
    settings = SlackSettings.load(environ=ENV)
    assert settings.bot_token.get_secret_value() == "xoxb-from-env"
    assert settings.signing_secret.get_secret_value() == "env-secret"
    assert settings.channel == "C0ENV" and settings.api_url == "https://slack.com/api/"
    assert "xoxb-from-env" not in repr(settings) and "env-secret" not in str(settings)


def test_file_then_environment_then_code(tmp_path: Path) -> None:
    config = write_private(tmp_path / "slack.yaml", "slack:\n  bot_token: xoxb-file\n"
                           "  channel: C0FILE\n  signing_secret: file-secret\n")
    settings = SlackSettings.load(config, environ={"AGENTGUARD_SLACK_CHANNEL": "C0ENV"})
    assert settings.bot_token.get_secret_value() == "xoxb-file"
    assert settings.channel == "C0ENV"
    assert SlackSettings.load(config, environ={}, channel="C0CODE").channel == "C0CODE"
    named = SlackSettings.load(environ={"AGENTGUARD_SLACK_CONFIG": str(config)})
    assert named.signing_secret.get_secret_value() == "file-secret"


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    config = write_private(tmp_path / "slack.yaml", "bot_token: xoxb-file\n", mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        SlackSettings.load(config, environ={})


@pytest.mark.parametrize(("env", "match"), [
    ({"AGENTGUARD_SLACK_BOT_TOKEN": "xapp-swapped"}, "AGENTGUARD_SLACK_BOT_TOKEN"),
    ({"AGENTGUARD_SLACK_APP_TOKEN": "xoxb-swapped"}, "AGENTGUARD_SLACK_APP_TOKEN"),
    ({"AGENTGUARD_SLACK_API_URL": "file:///etc/passwd"}, "AGENTGUARD_SLACK_API_URL"),
])
def test_invalid_values_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        SlackSettings.load(environ=env)
    assert "swapped" not in str(info.value), "token values are never echoed"


def test_bad_file_content(tmp_path: Path) -> None:
    for text in ("[1, 2]\n", "bot_token: [unclosed\n", "unknown_key: 1\n"):
        config = write_private(tmp_path / "slack.yaml", text)
        with pytest.raises(ConfigError):
            SlackSettings.load(config, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        SlackSettings.load(tmp_path / "missing.yaml", environ={})


def test_require_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"AGENTGUARD_SLACK_SIGNING_SECRET.*never in the policy"):
        SlackSettings.load(environ={}).require("signing_secret")


def test_importing_without_slack_sdk_gives_the_install_hint() -> None:
    code = (
        "import sys\n"
        "sys.modules['slack_sdk'] = None  # as if it were not installed\n"
        "from agentguard.errors import ConfigError\n"
        "try:\n"
        "    import agentguard.channels.slack\n"
        "except ConfigError as exc:\n"
        "    print('CONFIG-ERROR:', exc)\n"
        "import agentguard.channels, agentguard.channels.webhook  # the rest still works\n"
        "print('core ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert "CONFIG-ERROR:" in out.stdout and "pip install 'agentguard[slack]'" in out.stdout
    assert "core ok" in out.stdout


def test_example_manifest_matches_what_the_code_needs() -> None:
    import yaml

    from agentguard.cli.serve_cmd import SLACK_PATH

    manifest = yaml.safe_load(Path("examples/slack/manifest.yaml").read_text())
    assert manifest["oauth_config"]["scopes"]["bot"] == ["chat:write"]
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith(SLACK_PATH)
    assert manifest["settings"]["socket_mode_enabled"] is False
