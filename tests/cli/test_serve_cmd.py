"""`agentguard serve`: every line it prints, and every warning it logs, carries its UTC time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.mark.timeout(60)
def test_serve_lines_and_warnings_are_timestamped(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTGUARD_HOME": str(tmp_path), "AGENTGUARD_WEBHOOK_SECRET": "s" * 32}
    env.pop("AGENTGUARD_STORE", None)
    env.pop("AGENTGUARD_AUDIT", None)
    serve = subprocess.Popen([sys.executable, "-m", "agentguard.cli", "serve", "--webhook",
                              "--port", "0"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None and serve.stderr is not None
        first = serve.stdout.readline()
        found = re.match(rf"^{STAMP} agentguard serve: listening on (http://[\d.:]+) ", first)
        assert found, first + serve.stderr.read()
        bad = urllib.request.Request(found.group(1) + "/webhook/callback", data=b"{}",
                                     method="POST", headers={
                                         "X-Agentguard-Timestamp": "1",
                                         "X-Agentguard-Signature": "v1=00"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 401
        warning = serve.stderr.readline()
        assert re.match(rf"^{STAMP} agentguard serve WARNING agentguard\.channels\.webhook: "
                        r"webhook callback rejected: timestamp outside", warning), warning
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    # The default store is the shared one under AGENTGUARD_HOME.
    assert (tmp_path / "agentguard.db").exists()
