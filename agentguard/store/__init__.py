"""Stores: shared state of held calls, grants, re-authentication and risk signals.

Pick a backend with :func:`open_store`:

- ``memory://`` — :class:`MemoryStore`, in-process (tests, demo);
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a bare path —
  :class:`SQLiteStore`, one file shared by processes on one host;
- ``postgresql://user@host:5432/db?schema=NAME`` (or ``postgres://``) —
  :class:`~agentguard.store.postgres.PostgresStore`, shared by replicas on many hosts
  (``pip install 'agentguard[postgres]'``). ``schema`` (default ``agentguard``) is taken out of
  the URL; every other parameter goes to libpq.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentguard._lazy import lazy_getattr
from agentguard.errors import ConfigError
from agentguard.store.base import Store, VoteResult

if TYPE_CHECKING:
    from agentguard.store.memory import MemoryStore
    from agentguard.store.postgres import PostgresStore
    from agentguard.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "PostgresStore", "SQLiteStore", "Store", "VoteResult", "open_store"]

# Backends are imported when asked for: a process loads the one it opens (PostgresStore also
# needs the `postgres` extra, psycopg).
_BACKENDS = {
    "MemoryStore": "agentguard.store.memory",
    "PostgresStore": "agentguard.store.postgres",
    "SQLiteStore": "agentguard.store.sqlite",
}


__getattr__ = lazy_getattr(__name__, _BACKENDS, globals())

_VALID = "memory://, sqlite:///PATH (or a bare file path)"


def open_store(url: str, *, clock: Callable[[], float] = time.time) -> Store:
    """Build the store named by ``url``; call ``await store.open()`` (or ``async with``) next.

    Follows SQLAlchemy's convention for SQLite: ``sqlite:///state.db`` is relative to the
    working directory, ``sqlite:////var/lib/agentguard/state.db`` is absolute.

    Args:
        url: ``memory://``, ``sqlite:///PATH``, a file path, or ``postgresql://...``
            (``?schema=NAME`` picks the PostgreSQL schema).
        clock: Source of the current Unix time, passed to the backend.

    Raises:
        ConfigError: the scheme is unknown, the path is empty, or the backend is unavailable.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if not text:
            raise ConfigError(f"empty store URL; use one of: {_VALID}")
        from agentguard.store.sqlite import SQLiteStore

        return SQLiteStore(os.path.expanduser(text), clock=clock)
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise ConfigError(f"memory:// takes no path, got {url!r}")
        from agentguard.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        if not rest.startswith("/") or not rest[1:]:
            raise ConfigError(
                f"SQLite store URL {url!r} has no path; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        from agentguard.store.sqlite import SQLiteStore

        return SQLiteStore(os.path.expanduser(rest[1:]), clock=clock)
    if scheme in ("postgres", "postgresql"):
        return _postgres(text, clock)
    raise ConfigError(f"unknown store URL scheme {scheme!r}; use one of: {_VALID}")


def _postgres(url: str, clock: Callable[[], float]) -> Store:
    """A PostgresStore for ``url``: ``?schema=`` is ours, the rest of the URL goes to libpq."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    try:
        from agentguard.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"the PostgreSQL store needs psycopg ({exc}); pip install 'agentguard[postgres]'"
        ) from None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if not schemas:
        return PostgresStore(url, clock=clock)
    if len(schemas) > 1:
        raise ConfigError(f"PostgreSQL store URL names more than one schema: {schemas}")
    # libpq decodes %XX but not "+", so spaces (e.g. in options=) must be %20.
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return PostgresStore(urlunsplit(parts._replace(query=rest)), schema=schemas[0], clock=clock)
