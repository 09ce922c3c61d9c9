"""The policy field reference, generated from the pydantic model so it cannot drift.

Each field of :class:`~agentguard.policy.model.PolicyModel` becomes one row: its dotted path,
type, default and the ``description`` given in the model. ``agentguard policy reference``
prints it; ``python docs/gen_policy_reference.py`` writes it into ``docs/policy-reference.md``
and the README, and a test fails when either differs from what the model says.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentguard.durations import format_duration
from agentguard.policy.model import ApprovalFields, PolicyModel

__all__ = ["reference_rows", "render_reference"]

_DURATION = "duration"


def reference_rows() -> list[tuple[str, str, str, str]]:
    """Every policy field as ``(path, type, default, meaning)``, in the model's order.

    A model met a second time (``outside_schedule`` is a ``schedule``, a rule's ``reauth`` is
    a class's) is referred to, not repeated; a rule's approval fields are the classes'.
    """
    rows: list[tuple[str, str, str, str]] = []
    seen: dict[type[BaseModel], str] = {}
    _walk(PolicyModel, "", rows, seen)
    return rows


def render_reference() -> str:
    """The reference as a Markdown table."""
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for path, kind, default, meaning in reference_rows():
        lines.append(f"| `{path}` | {kind} | {default} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _walk(model: type[BaseModel], prefix: str, rows: list[tuple[str, str, str, str]],
          seen: dict[type[BaseModel], str]) -> None:
    seen[model] = prefix.rstrip(".")
    # The second model with approval fields (rules after classes) refers to the first.
    approval_at = seen.get(ApprovalFields) if issubclass(model, ApprovalFields) else None
    for name, info in model.model_fields.items():
        if approval_at is not None and name in _SHARED:
            continue
        path = f"{prefix}{info.alias or name}"
        inner, container = _unwrap(info.annotation)
        kind = _type_name(info.annotation)
        meaning = (info.description or "").strip()
        if isinstance(inner, type) and issubclass(inner, BaseModel) and inner in seen:
            rows.append((path, kind, _default(info, kind),
                         f"{meaning} Fields as `{seen[inner]}`.".strip()))
            continue
        rows.append((path, kind, _default(info, kind), meaning))
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            _walk(inner, path + {"dict": ".NAME.", "list": "[]."}.get(container, "."), rows,
                  seen)
    if approval_at is not None:
        rows.append((f"{prefix}{{{', '.join(_SHARED)}}}", "as the class's", "the class's",
                     f"As in `{approval_at}`; a rule's value wins over its class's."))
    elif issubclass(model, ApprovalFields):
        seen[ApprovalFields] = prefix.rstrip(".")


#: Approval fields a rule shares with its class (``require`` is listed on its own).
_SHARED = tuple(n for n in ApprovalFields.model_fields if n != "require")


def _unwrap(annotation: Any) -> tuple[Any, str]:
    """The model inside ``X | None``, ``list[X]`` or ``dict[str, X]``, and which container."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            inner, container = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner, container
        return annotation, ""
    if origin is list:
        return args[0], "list"
    if origin is dict:
        return args[1], "dict"
    return annotation, ""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if annotation is float:
        # Every float in the policy is a duration: "90s", "5m", "1h", "2d" or seconds.
        return _DURATION
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {str: "string", int: "integer", bool: "boolean"}.get(annotation, "any")


def _default(info: FieldInfo, kind: str) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        if len(type(value).model_fields) > 3:
            return "below"
        return ", ".join(f"{k}: {_scalar(v, kind)}" for k, v in
                         value.model_dump(exclude_defaults=False).items() if v is not None)
    if isinstance(value, dict):
        return ", ".join(f"`{k}`" for k in value) or "none"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value) or "none"
    return _scalar(value, kind)


def _scalar(value: Any, kind: str) -> str:
    if isinstance(value, float) and (kind == _DURATION or kind == "mapping"):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 10_000:
        return f"`{value}` ({value / 1_048_576:g} MiB)" if value % 1_048_576 == 0 else \
            f"`{value}`"
    if value == "":
        return "none"
    return f"`{value}`"
