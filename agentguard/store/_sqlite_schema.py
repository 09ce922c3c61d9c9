"""Schema and connection set-up of the SQLite store."""

from __future__ import annotations

import os
import sqlite3
import threading

from agentguard.errors import StoreError

__all__ = ["SCHEMA_VERSION", "connect"]

# Held while creating a file, so that no thread of this process opens it before the creating
# descriptor is closed (see connect()).
_CREATE_LOCK = threading.Lock()

SCHEMA_VERSION = 2
"""Version written to ``PRAGMA user_version``."""


_SCHEMA = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    call_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX requests_by_time ON requests (created_at);
CREATE INDEX requests_by_status ON requests (status, created_at);
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    kind TEXT NOT NULL,
    expires_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX grants_by_principal ON grants (principal, kind, expires_at);
CREATE TABLE reauth (
    subject TEXT NOT NULL, method TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (subject, method)
);
CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE otp_used (
    subject TEXT NOT NULL, timecode INTEGER NOT NULL, PRIMARY KEY (subject, timecode)
) WITHOUT ROWID;
CREATE TABLE failures (subject TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX failures_by_subject ON failures (subject, at);
CREATE TABLE lockouts (subject TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE events (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX events_by_key ON events (key, at);
CREATE TABLE first_use (
    principal TEXT NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL,
    PRIMARY KEY (principal, server, tool)
) WITHOUT ROWID;
CREATE TABLE cooldowns (key TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE pins (
    server TEXT NOT NULL, tool TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (server, tool)
);
"""

# Changes from the previous version, applied in order to an existing file.
_UPGRADES: dict[int, str] = {
    2: """
CREATE INDEX IF NOT EXISTS requests_by_hash ON requests (call_hash, created_at);
CREATE TABLE IF NOT EXISTS definitions (hash TEXT PRIMARY KEY, doc TEXT NOT NULL);
""",
}


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` (created with mode 0600), set WAL and timeouts, create or check the schema.

    Raises:
        StoreError: the file cannot be created or has a newer schema version.
    """
    try:
        with _CREATE_LOCK:
            # Create the file ourselves so that it never exists with the umask's mode. O_EXCL:
            # closing a descriptor of a file drops every POSIX lock this process holds on it,
            # so an existing database (maybe open in this process) is never opened outside
            # SQLite.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot open SQLite store {path!r}: {exc.strerror}") from None
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a consumed approval or used TOTP step must survive a power cut.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {path!r} has schema version {version}, newer than "
                    f"this agentguard supports ({SCHEMA_VERSION}); upgrade agentguard"
                )
            if version < SCHEMA_VERSION:
                steps = [_SCHEMA] if version == 0 else []
                steps += [_UPGRADES[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
                for script in steps:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn
