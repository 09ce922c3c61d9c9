"""Types before rules: a call's arguments are validated against the tool's schema before the
policy reads them.

A policy that reads raw arguments while the tool reads coerced ones can be walked round:
``force: "true"`` does not match a rule ``force: true``, yet a coercing tool runs the forced
variant. So every edge hands the guard a validator for the tool, the guard validates first
(a failure is refused as ``invalid``, audited, and never reaches a rule), and the policy, the
approver, the call hash and the tool all see the same validated values.

Two validators, each compiled once per tool:

- :class:`FunctionArguments` — a Python function's annotations (pydantic). ``@guarded``
  validates in Python mode (what a Python caller passes); the OpenAI/Anthropic dispatchers in
  strict JSON mode (what a model sends: no ``"true"`` for a boolean, no ``1`` for a boolean,
  no JSON string for an object). It also rebuilds the call from the frozen snapshot, so what
  runs is what was approved.
- :class:`JsonSchemaArguments` — a JSON Schema (an MCP tool's ``inputSchema``), strict as JSON
  Schema is; ``$ref`` is resolved inside the schema only, never fetched.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping, ValuesView
from typing import Any, Protocol, runtime_checkable

import orjson
import pydantic
import typing_extensions
from pydantic_core import PydanticSerializationError

from agentguard.canonical import MAX_DEPTH, CanonicalizationError, FrozenDict, freeze, thaw
from agentguard.errors import ArgumentValidationError, ConfigError

__all__ = ["ArgumentValidator", "FunctionArguments", "JsonSchemaArguments"]

_MESSAGE_LIMIT = 300
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@runtime_checkable
class ArgumentValidator(Protocol):
    """Checks a call's arguments against the tool's schema."""

    def validate(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return the validated arguments as JSON data.

        Raises:
            ArgumentValidationError: the arguments do not fit the schema.
        """
        ...


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _pydantic_problem(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return _short("; ".join(parts) + (f" (and {more} more)" if more > 0 else ""))


def _refuse_non_finite(value: Any, depth: int = 0) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentValidationError("NaN and infinity are not valid JSON numbers")
    elif depth <= MAX_DEPTH:
        if isinstance(value, Mapping):
            value = value.values()
        if isinstance(value, list | tuple | set | frozenset | ValuesView):
            for item in value:
                _refuse_non_finite(item, depth + 1)


class FunctionArguments:
    """Validate a Python function's arguments against its annotations, and rebuild the call
    from the validated snapshot.

    The arguments are keyed by parameter name, as :meth:`inspect.BoundArguments.arguments`
    gives them (``*args`` as a list under its name, ``**kwargs`` as an object under its name).

    Args:
        fn: The function.
        json: Validate what a model sent (strict JSON: no string for a boolean or a number,
            no number for a boolean, no JSON text for an object). Otherwise validate what a
            Python caller passed (pydantic's lax Python mode: the policy sees the converted
            values, which are the values the function gets).

    Raises:
        ConfigError: an annotation cannot be resolved or turned into a validator.
    """

    def __init__(self, fn: Callable[..., Any], *, json: bool = False) -> None:
        self.signature = inspect.signature(fn)
        self._json = json
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ConfigError(f"cannot resolve the annotations of {name}: {exc}") from exc
        fields: dict[str, Any] = {}
        for param in self.signature.parameters.values():
            annotation = hints.get(param.name, Any)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                annotation = list[annotation]  # type: ignore[valid-type]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                annotation = dict[str, annotation]  # type: ignore[valid-type]
            fields[param.name] = annotation
        # A TypedDict, not a model: parameter names need no escaping (``model_config``,
        # ``_private`` and keywords-as-strings are all fine as keys).
        shape = typing_extensions.TypedDict(f"ArgumentsOf_{name}", fields)  # type: ignore[misc]
        config = pydantic.ConfigDict(
            arbitrary_types_allowed=True, allow_inf_nan=False, ser_json_inf_nan="constants")
        try:
            self._adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
                pydantic.with_config(config)(shape))
        except Exception as exc:
            raise ConfigError(f"cannot build a validator for {name}: {exc}") from exc

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind a Python call to parameter names, defaults applied.

        Raises:
            TypeError: the call does not fit the signature (as calling the function would).
        """
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def named(self, sent: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments a model sent, bound to parameter names with defaults applied.

        Raises:
            ArgumentValidationError: a required argument is missing or one is unknown.
        """
        try:
            return self.bind((), sent)
        except TypeError as exc:
            raise ArgumentValidationError(_short(str(exc))) from None

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """Validated arguments as a frozen JSON snapshot.

        Raises:
            ArgumentValidationError: a value does not fit its annotation, or cannot be
                represented as JSON (the snapshot is what gets hashed and shown).
        """
        try:
            if self._json:
                try:
                    # freeze first: orjson would write NaN and infinities as null.
                    raw = orjson.dumps(freeze(args))
                except (TypeError, orjson.JSONEncodeError) as exc:
                    raise ArgumentValidationError(f"arguments are not JSON: {exc}") from None
                except CanonicalizationError as exc:
                    raise ArgumentValidationError(str(exc)) from None
                value = self._adapter.validate_json(raw, strict=True)
            else:
                value = self._adapter.validate_python(dict(args))
            # JSON mode writes NaN and infinities as null, even where the config says
            # otherwise (values typed Any): find them in the Python dump and refuse.
            _refuse_non_finite(self._adapter.dump_python(value))
            snapshot = self._adapter.dump_python(value, mode="json")
        except pydantic.ValidationError as exc:
            raise ArgumentValidationError(_pydantic_problem(exc)) from None
        except PydanticSerializationError as exc:
            raise ArgumentValidationError(
                _short(f"arguments cannot be represented as JSON: {exc}")) from None
        try:
            return freeze(snapshot)
        except CanonicalizationError as exc:
            raise ArgumentValidationError(str(exc)) from None

    def rebuild(self, snapshot: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments to call the function with, made from ``snapshot``
        (fresh objects: nothing the caller holds a reference to)."""
        values = self._adapter.validate_python(thaw(snapshot))
        positional: list[Any] = []
        keyword: dict[str, Any] = {}
        by_keyword = False
        for param in self.signature.parameters.values():
            if param.name not in values:
                continue
            value = values[param.name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                positional.extend(value)
                by_keyword = True  # anything after *args is keyword-only
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                keyword.update(value)
            elif param.kind in _POSITIONAL and not by_keyword:
                positional.append(value)
            else:
                keyword[param.name] = value
        return positional, keyword


class JsonSchemaArguments:
    """Validate arguments against a JSON Schema (an MCP tool's ``inputSchema``), compiled once.

    Args:
        schema: The schema. Its ``$schema`` picks the draft (2020-12 when absent). ``$ref``
            resolves within the schema only: nothing is ever fetched.

    Raises:
        ConfigError: the schema is not a valid JSON Schema (the tool's calls cannot be
            checked, so an edge refuses them).
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator, validators
        from jsonschema.exceptions import SchemaError

        if not isinstance(schema, Mapping):
            raise ConfigError("the tool's input schema is not an object")
        plain = thaw(schema)
        cls = validators.validator_for(plain, default=Draft202012Validator)
        try:
            cls.check_schema(plain)
        except SchemaError as exc:
            raise ConfigError(
                f"the tool's input schema is invalid: {_short(exc.message)}") from None
        self._validator = cls(plain)

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """The arguments as a frozen JSON snapshot, once they fit the schema.

        Raises:
            ArgumentValidationError: they do not fit, or the schema cannot be applied (an
                unresolvable ``$ref``).
        """
        from jsonschema.exceptions import best_match

        try:
            snapshot = freeze(args)
        except CanonicalizationError as exc:
            raise ArgumentValidationError(str(exc)) from None
        try:
            error = best_match(self._validator.iter_errors(snapshot))
        except RecursionError:
            raise ArgumentValidationError("the input schema recurses without end") from None
        except Exception as exc:  # referencing.exceptions.Unresolvable and the like
            raise ArgumentValidationError(
                _short(f"the tool's input schema cannot be applied: {exc}")) from None
        if error is not None:
            raise ArgumentValidationError(_short(f"{error.json_path}: {error.message}"))
        return snapshot
