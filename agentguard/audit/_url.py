"""Audit targets named by URL: which name a PostgreSQL log, and its DSN and schema.

Kept apart from :mod:`agentguard.audit.postgres` so that parsing needs no psycopg.
"""

from __future__ import annotations

from agentguard.errors import AuditError

__all__ = ["DEFAULT_AUDIT_SCHEMA", "is_postgres_url", "split_audit_url"]

#: The schema a URL without ``?schema=`` names (the PostgreSQL store's default).
DEFAULT_AUDIT_SCHEMA = "agentguard"


def is_postgres_url(target: object) -> bool:
    """Whether an audit target names a PostgreSQL log (``postgres://`` or ``postgresql://``)."""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in (
        "postgres", "postgresql") and "://" in target


def split_audit_url(url: str) -> tuple[str, str]:
    """``(dsn, schema)`` of an audit URL: ``?schema=NAME`` is ours, the rest goes to libpq.

    Raises:
        AuditError: the URL names more than one schema.
    """
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if len(schemas) > 1:
        raise AuditError(f"the audit URL names more than one schema: {schemas}")
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), schemas[0] if schemas else DEFAULT_AUDIT_SCHEMA
