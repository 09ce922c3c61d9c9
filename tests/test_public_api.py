"""The package's public surface: one exception root, deliberate ``__all__``, no import cycles,
typed for users' checkers."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import agentguard
from agentguard import errors
from agentguard.errors import AgentGuardError

PACKAGE = Path(agentguard.__file__).parent


def all_modules() -> Iterator[ModuleType]:
    """Every module of the package, the adapters (kept in their own folder) included."""
    import agentguard.adapters

    yield agentguard
    yield agentguard.adapters
    for package in (agentguard, agentguard.adapters):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith(".__main__"):
                yield importlib.import_module(info.name)


MODULES = list(all_modules())


def test_every_exception_agentguard_defines_derives_from_the_root_and_is_documented() -> None:
    tree = errors.__doc__ or ""
    found = []
    for module in MODULES:
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                found.append(obj)
                assert issubclass(obj, AgentGuardError), f"{module.__name__}.{name}"
                assert name in tree, f"{module.__name__}.{name} is missing from errors' tree"
    assert len(found) > 30  # the walk saw the whole package


def test_every_all_names_what_exists_once() -> None:
    """(Sorted, isort-style, is ruff's RUF022, run in CI.)"""
    for module in MODULES:
        names = getattr(module, "__all__", None)
        if names is None:
            continue
        assert len(set(names)) == len(names), f"{module.__name__}.__all__ repeats a name"
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def test_every_public_module_declares_its_surface() -> None:
    """A module whose name has no leading underscore says what it exports."""
    missing = [m.__name__ for m in MODULES
               if not any(part.startswith("_") for part in m.__name__.split("."))
               and not hasattr(m, "__all__")]
    assert missing == []


def test_public_classes_and_functions_defined_in_a_module_are_in_its_all() -> None:
    """(The CLI's modules are left out: their surface is the command line.)"""
    for module in MODULES:
        names = set(getattr(module, "__all__", ()))
        if (not names or module.__name__.rsplit(".", 1)[-1].startswith("_")
                or module.__name__.startswith("agentguard.cli")):
            continue
        for name, obj in vars(module).items():
            if (not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                    and getattr(obj, "__module__", None) == module.__name__):
                assert name in names, f"{module.__name__}.{name} is public but not in __all__"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    adapters = Path(importlib.import_module("agentguard.adapters").__file__).parent
    for path in adapters.rglob("*.py"):
        rest = path.relative_to(adapters).with_suffix("").parts
        name = ".".join(("agentguard", "adapters", *(() if rest == ("__init__",) else rest)))
        names[name] = path
    return names


def _runtime_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of agentguard that ``module`` imports at run time: at the top or inside a
    function alike (an import moved into a function still makes a cycle); only imports under
    ``if TYPE_CHECKING:`` are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts) + (f".{node.module}" if node.module else "")
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        found.update(t for t in targets if t in known and t != module)
    return found


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Every simple path from a module back to itself, as the set of its modules; a package
    importing its own submodules (or a submodule its package) is no cycle."""

    def related(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    found: set[frozenset[str]] = set()
    for start in graph:
        for first in graph[start]:
            if related(start, first):
                continue
            stack = [(first, [first])]
            seen: set[str] = set()
            while stack:
                node, path = stack.pop()
                if node == start:
                    found.add(frozenset(path))
                    continue
                for nxt in graph[node]:
                    if not related(node, nxt) and nxt not in seen:
                        seen.add(nxt)
                        stack.append((nxt, [*path, nxt]))
    return found


def test_no_import_cycles() -> None:
    modules = _module_names()
    graph = {name: _runtime_imports(name, path, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == set()


def test_the_cycle_finder_finds_a_cycle_held_apart_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import y\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    from a import z\n")
    names = {"a": tmp_path / "a.py", "b": tmp_path / "b.py", "c": tmp_path / "c.py"}
    graph = {name: _runtime_imports(name, path, set(names)) for name, path in names.items()}
    assert _cycles(graph) == {frozenset({"a", "b"})}


def test_the_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.parametrize("name", sorted(agentguard.__all__))
def test_the_top_level_surface_resolves(name: str) -> None:
    assert getattr(agentguard, name) is not None
