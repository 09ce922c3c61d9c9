"""Where the CLI finds the policy, store and audit log: flags, then environment, then
defaults under ``~/.agentguard`` (``AGENTGUARD_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["approver_identity", "audit_path", "default_home", "policy_path", "store_url"]


def default_home() -> Path:
    """``$AGENTGUARD_HOME`` or ``~/.agentguard`` (created, mode 0700)."""
    home = Path(os.environ.get("AGENTGUARD_HOME") or Path.home() / ".agentguard")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def store_url(flag: str | None) -> str:
    """Store URL: ``--store``, ``$AGENTGUARD_STORE``, or the SQLite file in the home."""
    return flag or os.environ.get("AGENTGUARD_STORE") or f"sqlite:///{default_home()}/agentguard.db"


def audit_path(flag: str | None) -> Path:
    """Audit log path: ``--audit``, ``$AGENTGUARD_AUDIT``, or ``audit.jsonl`` in the home."""
    return Path(flag or os.environ.get("AGENTGUARD_AUDIT") or default_home() / "audit.jsonl")


def policy_path(flag: str | None) -> str | None:
    """Policy path: ``--policy`` or ``$AGENTGUARD_POLICY``."""
    return flag or os.environ.get("AGENTGUARD_POLICY")


def approver_identity(flag: str | None = None) -> str:
    """Who is approving at this terminal: ``--as`` / ``$AGENTGUARD_APPROVER`` when set,
    else the OS user. Console identity is only as strong as the machine's accounts."""
    import getpass

    return flag or os.environ.get("AGENTGUARD_APPROVER") or getpass.getuser()
