"""Matching of rule conditions against calls: globs, argument paths and operators.

A predicate answers True or False, except the ``path`` operator's, which raises
:class:`~agentguard.policy.paths.ArgumentRefused` for an argument no rule may reason about
(see :mod:`agentguard.policy.paths`); the classifier catches it, once, and refuses the call.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from agentguard.policy.conditions import is_operator_mapping, path_match
from agentguard.policy.model import PrincipalMatch
from agentguard.policy.paths import ArgumentRefused, UnsafePath, normalise_path
from agentguard.types import Principal

__all__ = [
    "Predicate",
    "compile_args",
    "compile_condition",
    "compile_globs",
    "compile_principal",
    "lookup",
]

Predicate = Callable[[Any], bool]
_MISSING = object()


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch's translation, but '**' and '*' both cross dots/slashes; case-sensitive.
    return re.compile(fnmatch.translate(pattern))


def compile_globs(patterns: str | list[str] | None) -> Callable[[str], bool] | None:
    """A predicate true when the text matches any glob; None when no patterns are given."""
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    exact = frozenset(p for p in items if not any(c in p for c in "*?["))
    regexes = [_glob_regex(p) for p in items if p not in exact]

    def match(text: str) -> bool:
        return text in exact or any(r.match(text) for r in regexes)

    return match


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``) through mappings and lists; ``_MISSING`` if absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list | tuple) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _path_op(cond: Mapping[str, Any], rule_id: str | None, arg: str) -> Predicate:
    spec = path_match(arg, dict(cond))
    fold: Callable[[str], str] = str.casefold if spec.case == "insensitive" else str
    patterns = [fold(p) for p in spec.patterns]
    # See agentguard.policy.paths: '/x' patterns match absolute paths; 'x' patterns match
    # from the root whichever way the path is spelled.
    absolute = compile_globs([p for p in patterns if p.startswith("/")] or None)
    from_root = compile_globs([p for p in patterns if not p.startswith("/")] or None)

    def match(value: Any) -> bool:
        if value is _MISSING:
            return False
        if not isinstance(value, str):
            raise ArgumentRefused(rule_id, arg, f"is not a string (got {_kind(value)})")
        try:
            path = fold(normalise_path(value))
        except UnsafePath as exc:
            raise ArgumentRefused(rule_id, arg, str(exc)) from None
        if absolute is not None and path.startswith("/") and absolute(path):
            return True
        return from_root is not None and from_root(path.removeprefix("/") or ".")

    return match


def _kind(value: Any) -> str:
    """A value's type as JSON names it (the agent sent JSON, whatever the edge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _op(op: str, operand: Any) -> Predicate:
    if op == "eq":
        return lambda v: v is not _MISSING and _equal(v, operand)
    if op == "ne":
        return lambda v: v is _MISSING or not _equal(v, operand)
    if op == "in":
        choices = list(operand)
        return lambda v: v is not _MISSING and any(_equal(v, c) for c in choices)
    if op == "not_in":
        choices = list(operand)
        return lambda v: v is _MISSING or not any(_equal(v, c) for c in choices)
    if op == "glob":
        match = compile_globs(operand)
        assert match is not None
        return lambda v: isinstance(v, str) and match(v)
    if op == "regex":
        regex = re.compile(operand)
        return lambda v: isinstance(v, str) and regex.search(v) is not None
    if op == "exists":
        want = bool(operand)
        return lambda v: (v is not _MISSING) == want
    compare: Callable[[float, float], Any] = {
        "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[op]
    limit = float(operand)

    def numeric(v: Any) -> bool:
        n = _number(v)
        if n is None:
            return False
        return bool(compare(n, limit))

    return numeric


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; a policy saying `force: 1` must not match `force: true`.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def compile_condition(
    condition: Any, *, rule_id: str | None = None, arg: str = "value",
) -> Predicate:
    """Compile one argument condition (a literal, or a mapping of operators, all of which
    must hold) into a predicate over the looked-up value.

    Args:
        condition: As written in the policy (validated by the model).
        rule_id: The rule it belongs to, named when the ``path`` operator refuses a value.
        arg: The argument's dotted path, named likewise.
    """
    if is_operator_mapping(condition):
        preds = [_op(op, operand) for op, operand in condition.items()
                 if op not in ("path", "case")]
        if "path" in condition:
            # First, so that whether a bad path is refused never depends on key order.
            preds.insert(0, _path_op(condition, rule_id, arg))
        return lambda v: all(p(v) for p in preds)
    return lambda v: v is not _MISSING and _equal(v, condition)


def compile_args(
    conditions: Mapping[str, Any] | None, *, rule_id: str | None = None,
) -> Callable[[Mapping[str, Any]], bool]:
    """All argument conditions of a rule, as one predicate over the call's arguments.

    The predicate raises :class:`~agentguard.policy.paths.ArgumentRefused` where a ``path``
    operator is given a value it must refuse; path conditions are checked first, so that
    happens whatever the rule's other argument conditions say.
    """
    if not conditions:
        return lambda args: True
    # Path conditions first: a bad path is refused whatever the other conditions say.
    ordered = sorted(conditions.items(),
                     key=lambda item: not (is_operator_mapping(item[1]) and "path" in item[1]))
    compiled = [(path, compile_condition(cond, rule_id=rule_id, arg=path))
                for path, cond in ordered]
    return lambda args: all(pred(lookup(args, path)) for path, pred in compiled)


def compile_principal(spec: PrincipalMatch | None) -> Callable[[Principal], bool] | None:
    """A predicate over the principal; None when the rule does not look at it."""
    if spec is None:
        return None
    id_match = compile_globs(spec.id)
    kinds = None if spec.kind is None else (
        {spec.kind} if isinstance(spec.kind, str) else set(spec.kind))
    claims = compile_args(spec.claims)

    def match(principal: Principal) -> bool:
        if id_match is not None and not id_match(principal.id):
            return False
        if kinds is not None and principal.kind not in kinds:
            return False
        return claims(principal.claims)

    return match
