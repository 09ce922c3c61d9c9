"""Names for option values in ``--help`` (``--store URL``, not ``--store <str>``)."""

from __future__ import annotations

from typing import Any

__all__ = ["METAVARS", "name_metavars"]

#: Value names by option name (without dashes); other options show their name in capitals.
METAVARS = {
    "answer": "WHO", "args": "JSON", "as": "NAME", "at": "TIME", "audit": "PATH",
    "call": "JSON", "code": "CODE", "config": "PATH", "env": "KEY=VALUE", "for": "DURATION",
    "hash": "HASH", "home": "DIR", "host": "HOST", "interval": "SECONDS", "key": "PATH",
    "listen": "HOST:PORT", "log-level": "LEVEL", "n": "N", "name": "NAME", "out": "PATH",
    "policy": "PATH", "port": "PORT", "principal": "ID", "reason": "TEXT",
    "service-key": "PATH", "slack-config": "PATH", "store": "URL", "top": "N",
    "trust": "PATH", "upstream-mode": "MODE", "upstream-url": "URL",
    "webhook-identity-prefix": "PREFIX",
}


def name_metavars(command: Any) -> Any:
    """Give every option that takes a value and has no metavar a readable one, recursively.

    ``command`` is what ``typer.main.get_command`` returns (Typer's own click-like command
    classes, so this reads only the attributes click documents for parameters).
    """
    for param in command.params:
        if (param.param_type_name == "option" and param.metavar is None
                and not getattr(param, "is_flag", False) and not getattr(param, "count", False)):
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = METAVARS.get(longest, longest.upper().replace("-", "_"))
    for sub in getattr(command, "commands", {}).values():
        name_metavars(sub)
    return command
