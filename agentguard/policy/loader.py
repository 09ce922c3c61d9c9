"""Loading a policy file: YAML (safe), validation, and errors that name file, rule, field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agentguard.errors import PolicyError
from agentguard.policy.model import PolicyModel

__all__ = ["parse_policy_text", "read_policy_file"]


# libyaml's parser where PyYAML was built with it (about 4 ms less per policy at start-up);
# the constructor, and so what a document may contain, is SafeLoader's either way.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses duplicate keys: a policy must not say two things at once."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_CROSS_REF = re.compile(r"^rules\[(?P<rule>[^\]]+)\]\.?(?P<field>[\w.]*): (?P<msg>.*)$", re.S)
_FIELD_REF = re.compile(r"^(?P<field>(?:classes|defaults|signals)\.[\w.-]+): (?P<msg>.*)$", re.S)


def _rule_id(raw: Any, index: Any) -> str | None:
    try:
        rid = raw["rules"][index].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return str(rid) if rid is not None else f"#{index}"


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_policy_text(text: str, source: str | None = None) -> PolicyModel:
    """Parse and validate policy YAML.

    Raises:
        PolicyError: naming the file, the rule (when inside one) and the field.
    """
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", file=source) from exc
    except RecursionError as exc:
        raise PolicyError("invalid YAML: nested too deeply", file=source) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyError("the policy must be a mapping at the top level", file=source)
    try:
        return PolicyModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        rule = None
        field_loc = loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule = _rule_id(raw, loc[1])
            field_loc = loc[2:]
        if not field_loc and rule is None:
            # Cross-reference errors are raised by the model as "rules[ID].field: message".
            found = _CROSS_REF.match(err.get("msg", "").removeprefix("Value error, "))
            if found:
                rule = found["rule"]
                field_loc = tuple(found["field"].split(".")) if found["field"] else ()
                err = {**err, "msg": found["msg"]}
            else:
                found = _FIELD_REF.match(err.get("msg", "").removeprefix("Value error, "))
                if found:
                    field_loc = tuple(found["field"].split("."))
                    err = {**err, "msg": found["msg"]}
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        raise PolicyError(msg + more, file=source, rule=rule,
                          field=_field_path(field_loc) or None) from exc


def read_policy_file(path: str | Path) -> tuple[str, str]:
    """Read a policy file; return (text, display name)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", file=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy is not UTF-8: {exc}", file=str(p)) from exc
