"""Stores: shared state of held calls, grants, re-authentication and risk signals.

Pick a backend with :func:`open_store`:

- ``memory://`` — :class:`MemoryStore`, in-process (tests, demo);
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path —
  :class:`SQLiteStore`, one file shared by processes on one host;
- ``postgres://`` / ``postgresql://`` — not available yet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from agentguard.errors import ConfigError
from agentguard.store.base import Store, VoteResult
from agentguard.store.memory import MemoryStore
from agentguard.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "VoteResult", "open_store"]

_VALID = "memory://, sqlite:///PATH (or a bare file path)"


def open_store(url: str, *, clock: Callable[[], float] = time.time) -> Store:
    """Build the store named by ``url``; call ``await store.open()`` (or ``async with``) next.

    Follows SQLAlchemy's convention for SQLite: ``sqlite:///state.db`` is relative to the
    working directory, ``sqlite:////var/lib/agentguard/state.db`` is absolute.

    Args:
        url: ``memory://``, ``sqlite:///PATH`` or a file path.
        clock: Source of the current Unix time, passed to the backend.

    Raises:
        ConfigError: the scheme is unknown, the path is empty, or the backend is unavailable.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if not text:
            raise ConfigError(f"empty store URL; use one of: {_VALID}")
        return SQLiteStore(os.path.expanduser(text), clock=clock)
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise ConfigError(f"memory:// takes no path, got {url!r}")
        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        if not rest.startswith("/") or not rest[1:]:
            raise ConfigError(
                f"SQLite store URL {url!r} has no path; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        return SQLiteStore(os.path.expanduser(rest[1:]), clock=clock)
    if scheme in ("postgres", "postgresql"):
        raise ConfigError(
            "the PostgreSQL store is not available in this version of agentguard "
            "(it will need `pip install agentguard[postgres]`); use sqlite:///PATH for now"
        )
    raise ConfigError(f"unknown store URL scheme {scheme!r}; use one of: {_VALID}")
