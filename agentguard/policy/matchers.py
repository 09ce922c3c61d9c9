"""Matching of rule conditions against calls: globs, argument paths and operators."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from agentguard.policy.model import OPERATORS, PrincipalMatch
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
    compare = {"gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
               "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}[op]
    limit = float(operand)

    def numeric(v: Any) -> bool:
        n = _number(v)
        return n is not None and compare(n, limit)

    return numeric


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; a policy saying `force: 1` must not match `force: true`.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def compile_condition(condition: Any) -> Predicate:
    """Compile one argument condition (a literal, or a mapping of operators, all of which
    must hold) into a predicate over the looked-up value."""
    if isinstance(condition, dict) and condition and set(condition) <= OPERATORS:
        preds = [_op(op, operand) for op, operand in condition.items()]
        return lambda v: all(p(v) for p in preds)
    return lambda v: v is not _MISSING and _equal(v, condition)


def compile_args(conditions: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool]:
    """All argument conditions of a rule, as one predicate over the call's arguments."""
    if not conditions:
        return lambda args: True
    compiled = [(path, compile_condition(cond)) for path, cond in conditions.items()]
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
