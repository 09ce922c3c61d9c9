"""Argument conditions of a rule: the operators, and the ``path`` operator's settings.

A condition is a literal (the argument equals it) or a mapping of operators that must all
hold. Validated here for the policy model; compiled into predicates by
:mod:`agentguard.policy.matchers`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentguard.policy.paths import pattern_problem

__all__ = [
    "MODIFIERS",
    "OPERATORS",
    "ArgCondition",
    "PathMatch",
    "is_operator_mapping",
    "path_match",
    "validate_condition",
]

ArgCondition = Any
"""An argument condition: a literal (equality), or a mapping of operators among
``eq, ne, in, not_in, glob, path, regex, gt, ge, lt, le, exists`` (all must hold); ``case``
may go with ``path``."""

OPERATORS = frozenset({"eq", "ne", "in", "not_in", "glob", "path", "regex", "gt", "ge", "lt",
                       "le", "exists"})
#: Keys that qualify an operator rather than test anything: ``{path: ..., case: insensitive}``.
MODIFIERS = frozenset({"case"})


def is_operator_mapping(cond: Any) -> bool:
    """Whether an argument condition is a mapping of operators (else: a literal to equal)."""
    return (isinstance(cond, dict) and bool(cond.keys() & OPERATORS)
            and cond.keys() <= OPERATORS | MODIFIERS)


class PathMatch(BaseModel):
    """The ``path`` operator: ``{path: "prod/**"}``, ``{path: [prod, "prod/**"], case:
    insensitive}``.

    The argument is normalised before the globs are applied: ``\\`` is a separator, ``.``
    and empty segments and a trailing ``/`` go, ``..`` removes the segment before it; so
    ``staging/../prod/db``, ``prod//db`` and ``./prod/db`` are all ``prod/db``. A pattern
    without a leading ``/`` matches from the root however the path is spelled (``prod/db``
    and ``/prod/db``); one with a leading ``/`` matches absolute paths only. A path that
    climbs above its root (``../x``, ``/../etc``), contains a NUL, or is not a string is
    refused outright: the call is denied, never passed on to a later rule. A missing
    argument does not match. Globs as for ``glob`` (``*`` crosses ``/``); ``prod/**`` does not
    match ``prod`` itself, so list both.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | list[str] = Field(
        description="Glob(s) in normal form matched against the normalised argument "
        "(see PathMatch).")
    case: Literal["sensitive", "insensitive"] = Field(
        default="sensitive", description="insensitive: compare case-folded (for tools on "
        "case-insensitive filesystems or stores).")

    @field_validator("path")
    @classmethod
    def _normal_patterns(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("needs at least one pattern")
        for pattern in items:
            problem = pattern_problem(pattern)
            if problem:
                raise ValueError(problem)
        return value

    @property
    def patterns(self) -> list[str]:
        """The globs, as a list."""
        return [self.path] if isinstance(self.path, str) else list(self.path)


def validate_condition(path: str, cond: Any) -> None:
    """Check one argument condition of a rule.

    Raises:
        ValueError: naming the argument (``args.path: ...``).
    """
    if is_operator_mapping(cond):
        if "case" in cond and "path" not in cond:
            raise ValueError(f"args.{path}: 'case' goes with 'path'")
        if "path" in cond:
            path_match(path, cond)
        for op, operand in cond.items():
            if op == "regex":
                try:
                    re.compile(operand)
                except (re.error, TypeError) as exc:
                    raise ValueError(f"args.{path}: invalid regex {operand!r}: {exc}") from exc
            if op in ("in", "not_in") and not isinstance(operand, list):
                raise ValueError(f"args.{path}: '{op}' needs a list")
            if op in ("gt", "ge", "lt", "le") and (
                isinstance(operand, bool) or not isinstance(operand, int | float)
            ):
                raise ValueError(f"args.{path}: '{op}' needs a number")
    elif isinstance(cond, dict) and any(k in OPERATORS for k in cond):
        unknown = sorted(set(cond) - OPERATORS - MODIFIERS)
        raise ValueError(f"args.{path}: unknown operator(s) {unknown}")


def path_match(arg: str, cond: dict[str, Any]) -> PathMatch:
    """The validated ``path`` operator of one argument condition.

    Raises:
        ValueError: naming the argument and the field (``args.path.case: ...``).
    """
    try:
        return PathMatch.model_validate({k: cond[k] for k in ("path", "case") if k in cond})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = f".{err['loc'][0]}" if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ValueError(f"args.{arg}{where}: {msg}") from None
