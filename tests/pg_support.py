"""PostgreSQL for the tests: the DSN, a reachability check, and a throw-away schema per test.

Tests that need the server call :func:`reachable_dsn` (a skip when it does not answer, which
``AGENTGUARD_REQUIRE_SERVICES=1`` turns into a failure) and work in :func:`fresh_schema`, a
random ``agentguard_test_<hex>`` schema dropped afterwards: tests can run in parallel and leave
nothing behind.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def dsn() -> str:
    """The DSN from ``AGENTGUARD_PG_DSN``, or the local test server."""
    return os.environ.get("AGENTGUARD_PG_DSN") or DEFAULT_DSN


def _shown(value: str) -> str:
    try:
        info = conninfo_to_dict(value)
    except psycopg.Error:
        return "<unparsable AGENTGUARD_PG_DSN>"
    return f"{info.get('host', 'localhost')}:{info.get('port', '5432')}/{info.get('dbname', '')}"


@functools.cache
def _problem(value: str) -> str | None:
    try:
        psycopg.connect(value, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def reachable_dsn() -> str:
    """The DSN, or skip the test when the server does not answer."""
    value = dsn()
    problem = _problem(value)
    if problem is not None:
        pytest.skip(f"PostgreSQL not reachable at {_shown(value)}: {problem}")
    return value


def new_schema_name() -> str:
    """A random schema name no other test uses."""
    return f"agentguard_test_{secrets.token_hex(6)}"


def drop_schema(value: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    with psycopg.connect(value, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_schema(value: str) -> Iterator[str]:
    """A random schema name, dropped on exit (created by whatever opens it first)."""
    schema = new_schema_name()
    try:
        yield schema
    finally:
        drop_schema(value, schema)
