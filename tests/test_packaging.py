"""Extras declare what the code imports, and install hints name an extra that exists."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_charts_extra_is_matplotlib_only_and_slack_has_no_bolt() -> None:
    assert EXTRAS["charts"] == ["matplotlib>=3.8"]
    assert not any("bolt" in dep for dep in EXTRAS["slack"])
    assert "charts" in EXTRAS["all"][0]


def test_nothing_imports_slack_bolt() -> None:
    found = [p for p in (ROOT / "agentguard").rglob("*.py") if "slack_bolt" in p.read_text()]
    assert found == []


def test_chart_hint_names_the_charts_extra() -> None:
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from agentguard.audit._report_chart import _matplotlib\n"
            "try:\n    _matplotlib()\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    assert "pip install 'agentguard[charts]'" in out
