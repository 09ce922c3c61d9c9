"""The adapter examples run offline, unattended, and show a refusal and an approval."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import EXAMPLES


@pytest.mark.parametrize("example", ["langchain_agent", "openai_chat", "openai_agents",
                                     "anthropic_messages", "mcp_server"])
def test_example_runs(example: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{example}.py")],
                          capture_output=True, text=True, timeout=120, cwd=EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    assert "agentguard refused 'delete_file' (denied) by rule 'deletes'" in proc.stdout
    assert "audit: call.executed" in proc.stdout
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
