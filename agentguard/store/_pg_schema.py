"""Schema of the PostgreSQL store and audit log: names, migrations, the version check.

Everything agentguard keeps in PostgreSQL lives in one schema (``agentguard`` unless told
otherwise), so several deployments or test runs can share a database without seeing each other.
``schema_version`` holds one row: the version of the tables. Opening a store or an audit log
migrates an older schema inside one transaction, serialised across processes by an advisory
lock, and refuses a newer one (written by a newer agentguard) rather than guess.

The ``doc`` columns hold JSON as ``text``, not ``jsonb``: ``jsonb`` rejects ``\\u0000``, which a
tool argument may well contain, and the codec's ASCII JSON round-trips every value exactly.
"""

from __future__ import annotations

import hashlib
import re

from agentguard.errors import ConfigError, StoreError

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Names",
    "check_version",
]

DEFAULT_SCHEMA = "agentguard"

SCHEMA_VERSION = 2
"""Version of the tables this agentguard writes."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# First key of the two-int advisory locks agentguard takes ("agrd").
_LOCK_SPACE = 0x61677264

# Statements per version; "{s}" is the quoted schema name. Version N+1 lists only the changes
# from N, so an existing database is upgraded in place.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE {s}.requests (
            id text PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            status text NOT NULL,
            call_hash text NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL,
            decided_at double precision,
            doc text NOT NULL
        )""",
        "CREATE INDEX requests_by_time ON {s}.requests (created_at DESC, seq DESC)",
        "CREATE INDEX requests_by_status ON {s}.requests (status, created_at DESC, seq DESC)",
        """CREATE TABLE {s}.grants (
            id text PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            principal text NOT NULL,
            kind text NOT NULL,
            expires_at double precision NOT NULL,
            uses integer NOT NULL DEFAULT 0,
            doc text NOT NULL
        )""",
        "CREATE INDEX grants_by_principal ON {s}.grants (principal, kind, expires_at)",
        """CREATE TABLE {s}.reauth (
            subject text NOT NULL, method text NOT NULL, at double precision NOT NULL,
            PRIMARY KEY (subject, method)
        )""",
        "CREATE TABLE {s}.secrets (name text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE {s}.otp_used (
            subject text NOT NULL, timecode bigint NOT NULL, PRIMARY KEY (subject, timecode)
        )""",
        "CREATE TABLE {s}.failures (subject text NOT NULL, at double precision NOT NULL)",
        "CREATE INDEX failures_by_subject ON {s}.failures (subject, at)",
        "CREATE TABLE {s}.lockouts (subject text PRIMARY KEY, until double precision NOT NULL)",
        "CREATE TABLE {s}.events (key text NOT NULL, at double precision NOT NULL)",
        "CREATE INDEX events_by_key ON {s}.events (key, at)",
        """CREATE TABLE {s}.first_use (
            principal text NOT NULL, server text NOT NULL, tool text NOT NULL,
            PRIMARY KEY (principal, server, tool)
        )""",
        """CREATE TABLE {s}.cooldowns (
            key text PRIMARY KEY, until double precision NOT NULL, reason text NOT NULL
        )""",
        """CREATE TABLE {s}.pins (
            server text NOT NULL, tool text NOT NULL, hash text NOT NULL,
            PRIMARY KEY (server, tool)
        )""",
        # The audit chain: one row per record, and a single head row that writers lock.
        """CREATE TABLE {s}.audit_log (
            seq bigint PRIMARY KEY, hash text NOT NULL, line text NOT NULL
        )""",
        """CREATE TABLE {s}.audit_head (
            id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL
        )""",
        "INSERT INTO {s}.audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64))",
    ),
    2: (
        # A retried call finds the request raised for it (durable holds).
        "CREATE INDEX requests_by_hash ON {s}.requests (call_hash, created_at DESC, seq DESC)",
        # Tool definitions by hash, so a reviewer sees what a pin or pending hash stands for.
        "CREATE TABLE {s}.definitions (hash text PRIMARY KEY, doc text NOT NULL)",
    ),
}
assert max(MIGRATIONS) == SCHEMA_VERSION


class Names:
    """Quoted names and statements for one schema.

    Args:
        schema: Schema name: letters, digits and ``_``, at most 63 characters, not starting
            with a digit (PostgreSQL silently cuts longer names, which could merge two).

    Raises:
        ConfigError: the name is not acceptable.
    """

    def __init__(self, schema: str) -> None:
        if not isinstance(schema, str) or not _NAME.fullmatch(schema):
            raise ConfigError(
                f"PostgreSQL schema name {schema!r} is not allowed: use letters, digits and _, "
                "at most 63 characters, not starting with a digit"
            )
        self.schema = schema
        self.quoted = '"' + schema + '"'
        # NOTIFY channel names are identifiers too (63 bytes at most).
        channel = f"agentguard.{schema}"
        if len(channel) > 63:
            channel = "agentguard." + hashlib.sha256(schema.encode()).hexdigest()[:40]
        self.channel = channel
        self.lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big",
                                       signed=True)

    def q(self, template: str) -> str:
        """``template`` with ``{s}`` replaced by the quoted schema name."""
        return template.replace("{s}", self.quoted)

    def lock_sql(self) -> str:
        """Take the transaction-scoped advisory lock that serialises migrations."""
        return f"SELECT pg_advisory_xact_lock({_LOCK_SPACE}, {self.lock_key})"

    def prelude(self) -> tuple[str, ...]:
        """Statements run before reading the version (idempotent, under the lock)."""
        return (
            self.lock_sql(),
            self.q("CREATE SCHEMA IF NOT EXISTS {s}"),
            self.q(
                "CREATE TABLE IF NOT EXISTS {s}.schema_version ("
                " id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            ),
        )

    def version_sql(self) -> str:
        """Read the version (no row: a fresh schema)."""
        return self.q("SELECT version FROM {s}.schema_version WHERE id = 1")

    def upgrade(self, current: int) -> tuple[str, ...]:
        """Statements that bring a schema at ``current`` to :data:`SCHEMA_VERSION`."""
        steps = [self.q(sql) for v in range(current + 1, SCHEMA_VERSION + 1)
                 for sql in MIGRATIONS[v]]
        if steps:
            steps.append(self.q(
                f"INSERT INTO {{s}}.schema_version (id, version) VALUES (1, {SCHEMA_VERSION})"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version, updated_at = now()"
            ))
        return tuple(steps)


def check_version(schema: str, found: int | None) -> int:
    """The current version (0 for a fresh schema); refuse one newer than this agentguard.

    Raises:
        StoreError: the schema was written by a newer agentguard.
    """
    version = found or 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"PostgreSQL schema {schema!r} has version {version}, newer than this agentguard "
            f"supports ({SCHEMA_VERSION}); upgrade agentguard"
        )
    return version
