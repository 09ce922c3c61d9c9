"""JSON as the proxy's relay reads and writes it off the wire, without pydantic.

One place for the aliases, so a reader (and mypy) can follow a message from the line it was
read from to the line it is written to.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["JsonObject", "JsonValue", "RequestId"]

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
"""Any JSON value."""

JsonObject: TypeAlias = dict[str, JsonValue]
"""A JSON object (a JSON-RPC message, its ``params``, ``result``, ``error`` or ``_meta``)."""

RequestId: TypeAlias = str | int
"""A JSON-RPC request id (never a bool: the relay checks before it takes one)."""
