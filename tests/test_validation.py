"""Validators: what a model or a Python caller sends, checked before any rule reads it."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from agentguard.errors import ArgumentValidationError, ConfigError
from agentguard.validation import FunctionArguments, JsonSchemaArguments


def deploy(env: Literal["staging", "production"], force: bool = False,
           opts: dict[str, Any] | None = None) -> None:
    return None


@pytest.mark.parametrize("sent", [{"env": "production", "force": "true"},
                                  {"env": "production", "force": 1},
                                  {"env": "production", "force": "yes"},
                                  {"env": "production ", "force": True},
                                  {"env": "staging", "opts": {"a": float("-inf")}},
                                  {"env": "staging", "opts": [float("nan")]},
                                  {"env": "staging", "surprise": 1}])
def test_strict_json_refuses_what_a_model_might_send_to_be_read_differently(
    sent: dict[str, Any]
) -> None:
    validator = FunctionArguments(deploy, json=True)
    with pytest.raises(ArgumentValidationError):
        validator.validate(validator.named(sent))


def test_python_mode_converts_and_the_snapshot_rebuilds_the_same_values() -> None:
    validator = FunctionArguments(deploy)
    snapshot = validator.validate(validator.bind(("production",), {"force": "true"}))
    assert snapshot == {"env": "production", "force": True, "opts": None}
    positional, keyword = validator.rebuild(snapshot)
    assert positional == ["production", True, None] and keyword == {}
    with pytest.raises(TypeError):
        snapshot["force"] = False  # type: ignore[index]


@pytest.mark.parametrize("args", [{"force": "true"}, {"force": 1},
                                  {"change": '{"env": "production"}'},
                                  {"force": True, "n": float("inf")}])
def test_json_schema_is_strict(args: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {
        "force": {"type": "boolean"}, "n": {"type": "number"},
        "change": {"type": "object", "properties": {"env": {"type": "string"}}}}}
    with pytest.raises(ArgumentValidationError):
        JsonSchemaArguments(schema).validate(args)


def test_a_schema_ref_is_never_fetched_and_a_bad_schema_is_refused() -> None:
    remote = JsonSchemaArguments({"type": "object", "properties": {
        "a": {"$ref": "https://example.invalid/schema.json"}}})
    with pytest.raises(ArgumentValidationError, match="cannot be applied"):
        remote.validate({"a": 1})
    with pytest.raises(ConfigError):
        JsonSchemaArguments({"type": 5})
