"""Fixtures for the audit tests: real files in tmp_path, real failures."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def make_read_only() -> Iterator[object]:
    """Make a file unwritable for this process. A non-root user gets chmod 0444; root is not
    stopped by modes, so it gets the immutable attribute (chattr +i) instead."""
    pinned: list[Path] = []

    def apply(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o444)
            return
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)],
                                            capture_output=True).returncode != 0:
            pytest.skip("running as root without a working chattr: cannot make a file read-only")
        pinned.append(path)

    yield apply
    for path in pinned:
        subprocess.run(["chattr", "-i", str(path)], check=True)
