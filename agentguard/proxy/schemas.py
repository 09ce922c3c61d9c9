"""Types before rules in the proxy: each upstream tool's ``inputSchema``, compiled once.

A policy that reads the raw JSON while an SDK upstream coerces it can be walked round
(``force: "true"`` skips a rule ``force: true``, the upstream runs ``force=True``). So every
``tools/call`` the guard decides is validated against the tool's listed schema first (see
:mod:`agentguard.validation`); a validator is compiled once per (server, tool, definition
hash), so a changed definition gets its own and a repeated call costs a dict lookup. A schema
that is not a valid JSON Schema cannot check anything: its tool's calls are refused. The
schema's top-level defaults are filled in before validation, for the call and for an
approver's edit alike, as the decorator and the adapters do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentguard.arguments import fill_schema_defaults
from agentguard.canonical import FrozenDict
from agentguard.errors import ConfigError
from agentguard.validation import JsonSchemaArguments

__all__ = ["SchemaBook", "ToolArguments"]

#: Compiled schemas kept before the cache starts over (an upstream that keeps changing its
#: definitions must not grow the proxy without bound).
_LIMIT = 4096


class ToolArguments:
    """An upstream tool's arguments as every edge shows them: the schema's top-level
    defaults filled in, then validated (for the call and for an approver's edit alike)."""

    __slots__ = ("_checker", "_schema")

    def __init__(self, schema: Any) -> None:
        self._checker = JsonSchemaArguments(schema)
        self._schema = schema

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """The arguments, defaults filled, as a frozen snapshot once they fit the schema.

        Raises:
            ArgumentValidationError: they do not fit.
        """
        return self._checker.validate(fill_schema_defaults(args, self._schema))


class SchemaBook:
    """Compiled input schemas keyed by (server, tool, definition hash)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str, str], ToolArguments | ConfigError] = {}

    def validator(self, server: str, tool: str, digest: str,
                  schema: Any) -> ToolArguments:
        """The validator for one tool definition.

        Raises:
            ConfigError: the schema is not a valid JSON Schema (remembered, so every call
                to that definition is refused the same way without compiling again).
        """
        key = (server, tool, digest)
        found = self._compiled.get(key)
        if found is None:
            try:
                found = ToolArguments(schema)
            except ConfigError as exc:
                found = exc
            if len(self._compiled) >= _LIMIT:
                self._compiled.clear()
            self._compiled[key] = found
        if isinstance(found, ConfigError):
            raise found
        return found
