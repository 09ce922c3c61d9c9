"""Where agentguard finds the policy, store and audit log: explicit values, then environment,
then defaults under ``~/.agentguard`` (``AGENTGUARD_HOME``). Shared by the CLI and the proxy so
that both always meet in the same store and log."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["approver_identity", "audit_path", "default_home", "policy_path", "store_url"]


def default_home() -> Path:
    """``$AGENTGUARD_HOME`` or ``~/.agentguard`` (created, mode 0700)."""
    home = Path(os.environ.get("AGENTGUARD_HOME") or Path.home() / ".agentguard")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def store_url(flag: str | None = None) -> str:
    """Store URL: ``--store``, ``$AGENTGUARD_STORE``, or the SQLite file in the home."""
    return flag or os.environ.get("AGENTGUARD_STORE") or f"sqlite:///{default_home()}/agentguard.db"


def audit_path(flag: str | Path | None = None) -> Path:
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


def open_audit_log(path: Path):
    """The JSONL audit log at ``path`` (directory created), redacting with the keyed hash in
    ``<path>.key`` so equal secrets correlate across processes and restarts."""
    from agentguard.audit import JsonlAuditLog, Redactor, load_or_create_key

    path.parent.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(path.with_name(path.name + ".key"))
    return JsonlAuditLog(path, redactor=Redactor(key))
