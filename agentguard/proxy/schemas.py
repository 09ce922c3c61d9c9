"""Types before rules in the proxy: each upstream tool's ``inputSchema``, compiled once.

A policy that reads the raw JSON while an SDK upstream coerces it can be walked round
(``force: "true"`` skips a rule ``force: true``, the upstream runs ``force=True``). So every
``tools/call`` the guard decides is validated against the tool's listed schema first (see
:mod:`agentguard.validation`); a validator is compiled once per (server, tool, definition
hash), so a changed definition gets its own and a repeated call costs a dict lookup. A schema
that is not a valid JSON Schema cannot check anything: its tool's calls are refused.
"""

from __future__ import annotations

from typing import Any

from agentguard.errors import ConfigError
from agentguard.validation import JsonSchemaArguments

__all__ = ["SchemaBook"]

#: Compiled schemas kept before the cache starts over (an upstream that keeps changing its
#: definitions must not grow the proxy without bound).
_LIMIT = 4096


class SchemaBook:
    """Compiled input schemas keyed by (server, tool, definition hash)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str, str], JsonSchemaArguments | ConfigError] = {}

    def validator(self, server: str, tool: str, digest: str,
                  schema: Any) -> JsonSchemaArguments:
        """The validator for one tool definition.

        Raises:
            ConfigError: the schema is not a valid JSON Schema (remembered, so every call
                to that definition is refused the same way without compiling again).
        """
        key = (server, tool, digest)
        found = self._compiled.get(key)
        if found is None:
            try:
                found = JsonSchemaArguments(schema)
            except ConfigError as exc:
                found = exc
            if len(self._compiled) >= _LIMIT:
                self._compiled.clear()
            self._compiled[key] = found
        if isinstance(found, ConfigError):
            raise found
        return found
