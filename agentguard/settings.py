"""Where agentguard finds the policy, store and audit log: explicit values, then environment,
then defaults under ``~/.agentguard`` (``AGENTGUARD_HOME``).

Every entry point resolves through here — the CLI, ``agentguard proxy``, ``agentguard serve``
and a library guard built with :func:`default_store` and :func:`default_audit` — so a guard in
one process and ``agentguard approvals`` in another meet in the same store and log without
naming them:

=====================  =====================================================================
``AGENTGUARD_HOME``    directory of the defaults below (default ``~/.agentguard``, mode 0700)
``AGENTGUARD_STORE``   store URL (default ``sqlite:///$AGENTGUARD_HOME/agentguard.db``)
``AGENTGUARD_AUDIT``   audit log path (default ``$AGENTGUARD_HOME/audit.jsonl``), or a
                      ``postgresql://...[?schema=NAME]`` URL for a PostgreSQL log
=====================  =====================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentguard.audit.base import AuditSink
    from agentguard.store.base import Store

__all__ = [
    "approver_identity",
    "audit_path",
    "default_audit",
    "default_home",
    "default_store",
    "open_audit_log",
    "policy_path",
    "store_url",
]


def default_home() -> Path:
    """``$AGENTGUARD_HOME`` or ``~/.agentguard`` (created, mode 0700)."""
    home = Path(os.environ.get("AGENTGUARD_HOME") or Path.home() / ".agentguard").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def store_url(flag: str | None = None) -> str:
    """Store URL: ``--store``, ``$AGENTGUARD_STORE``, or the SQLite file in the home."""
    return flag or os.environ.get("AGENTGUARD_STORE") or f"sqlite:///{default_home()}/agentguard.db"


def audit_path(flag: str | Path | None = None) -> Path | str:
    """Audit log: ``--audit``, ``$AGENTGUARD_AUDIT``, or ``audit.jsonl`` in the home.

    A JSONL log is a :class:`~pathlib.Path`; a ``postgresql://`` (or ``postgres://``) URL,
    optionally with ``?schema=NAME``, names a PostgreSQL log and is returned as the string.
    """
    from agentguard.audit._url import is_postgres_url

    target = flag or os.environ.get("AGENTGUARD_AUDIT") or default_home() / "audit.jsonl"
    return str(target) if is_postgres_url(target) else Path(target)


def policy_path(flag: str | None) -> str | None:
    """Policy path: ``--policy`` or ``$AGENTGUARD_POLICY``."""
    return flag or os.environ.get("AGENTGUARD_POLICY")


def approver_identity(flag: str | None = None) -> str:
    """Who is approving at this terminal: ``--as`` / ``$AGENTGUARD_APPROVER`` when set,
    else the OS user. Console identity is only as strong as the machine's accounts."""
    import getpass

    return flag or os.environ.get("AGENTGUARD_APPROVER") or getpass.getuser()


def open_audit_log(path: Path | str) -> AuditSink:
    """The JSONL audit log at ``path`` (directory created), redacting with the keyed hash in
    ``<path>.key`` so equal secrets correlate across processes and restarts.

    A PostgreSQL URL (see :func:`audit_path`) opens a
    :class:`~agentguard.audit.postgres.PostgresAuditLog` instead, redacting with the key in
    ``audit.key`` of :func:`default_home`.
    """
    from agentguard.audit import JsonlAuditLog, Redactor, load_or_create_key
    from agentguard.audit._url import is_postgres_url, split_audit_url

    if is_postgres_url(path):
        from agentguard.audit.postgres import PostgresAuditLog

        dsn, schema = split_audit_url(str(path))
        home = default_home()
        home.mkdir(parents=True, exist_ok=True)
        return PostgresAuditLog(dsn, schema=schema,
                                redactor=Redactor(load_or_create_key(home / "audit.key")))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(path.with_name(path.name + ".key"))
    return JsonlAuditLog(path, redactor=Redactor(key))


def default_store(url: str | None = None) -> Store:
    """The store every entry point shares unless told otherwise (not yet opened).

    ``Guard(policy)`` alone keeps its state in memory, visible to no other process; pass
    ``store=default_store()`` for the store ``agentguard approvals``, ``serve`` and the proxy
    use by default.

    Args:
        url: An explicit store URL; default ``$AGENTGUARD_STORE``, else the SQLite file
            ``agentguard.db`` in :func:`default_home`.

    Returns:
        A :class:`~agentguard.store.base.Store`; the guard opens it (or ``await store.open()``).

    Raises:
        ConfigError: the URL names an unknown or unavailable backend.
    """
    from agentguard.store import open_store

    return open_store(store_url(url))


def default_audit(path: str | Path | None = None) -> AuditSink:
    """The audit log every entry point shares unless told otherwise.

    Args:
        path: An explicit path; default ``$AGENTGUARD_AUDIT``, else ``audit.jsonl`` in
            :func:`default_home`.

    Returns:
        A :class:`~agentguard.audit.JsonlAuditLog` redacting with the keyed hash in
        ``<path>.key``, as the CLI's and the proxy's do.

    Raises:
        AuditError: the log or its head cannot be opened.
    """
    return open_audit_log(audit_path(path))
