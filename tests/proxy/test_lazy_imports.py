"""What a stdio proxy with a plain policy never uses is never imported by its start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.proxy.conftest import ROOT

# Each is imported where it is used: TOTP checks and enrolment, the audit verifier and
# reader, the in-memory backends, the synchronous callers' portal.
NOT_AT_START = ("pyotp", "segno", "agentguard.audit.verify", "agentguard.audit.reader",
                "agentguard.audit.memory", "agentguard.store.memory", "anyio.from_thread")


def test_building_the_stdio_proxys_guard_imports_none_of_the_unused(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from agentguard.proxy.config import validate_config\n"
        "from agentguard.proxy.runner import build_guard\n"
        f"config = validate_config({{'policy': {str(ROOT / 'examples/proxy/ops-policy.yaml')!r},"
        " 'servers': [{'name': 'ops', 'command': 'true'}]})\n"
        "build_guard(config)\n"
        f"print(sorted(m for m in {NOT_AT_START!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "AGENTGUARD_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
