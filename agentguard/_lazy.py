"""Names a package exports without importing their modules until first use (PEP 562).

A stdio proxy starts in a fraction of a second only if importing ``agentguard`` (or
``agentguard.audit``, ``agentguard.store``) does not pull in every module those packages
export. Each package lists where its names live and gets its ``__getattr__`` from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, sources: Mapping[str, str],
                 namespace: MutableMapping[str, object]) -> Callable[[str], object]:
    """A module ``__getattr__`` importing ``sources[name]`` on first access to ``name``.

    Args:
        package: The package's ``__name__`` (for the error message).
        sources: Exported name → module defining it.
        namespace: The package's ``globals()``: a name found once is stored there, so later
            lookups never reach the function again.
    """

    def __getattr__(name: str) -> object:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
