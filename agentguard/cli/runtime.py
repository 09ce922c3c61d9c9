"""Opening the shared parts (store, audit log) for CLI commands."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import typer

from agentguard.errors import AgentGuardError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "color_enabled",
    "echo_json",
    "fail",
    "not_found",
    "open_audit",
    "run_with_store",
    "say",
    "wide_console",
]

T = TypeVar("T")

#: The command did what was asked.
EXIT_OK = 0
#: The command ran and the answer is no: not found, refused, failed verification, a store or
#: audit log that cannot be used.
EXIT_FAILED = 1
#: The command line or an input it names is wrong (bad option, JSON, policy file).
EXIT_USAGE = 2

EXIT_CODES_HELP = (
    "Exit status: 0 ok; 1 refused, failed or not found (no such request, grant or log; a "
    "vote not counted; a broken audit chain; a store that cannot be opened); 2 usage (a bad "
    "option or argument, unreadable JSON, an invalid policy file); 130 interrupted. "
    "NO_COLOR=1 turns colour off."
)


def color_enabled() -> bool | None:
    """False when ``NO_COLOR`` is set (https://no-color.org); otherwise let click decide."""
    return False if os.environ.get("NO_COLOR") else None


def say(message: str, *, fg: str | None = None, err: bool = False) -> None:
    """Print a line, coloured unless ``NO_COLOR`` is set or the stream is not a terminal."""
    typer.secho(message, fg=fg, err=err, color=color_enabled())


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print an error to stderr and return the Exit to raise (default: a usage error, 2)."""
    say(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def not_found(message: str) -> typer.Exit:
    """Print that something asked for does not exist; exit 1, the same for every command."""
    return fail(message, EXIT_FAILED)


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON: ASCII only, so no control or bidi character reaches a terminal."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True))


def open_audit(path: Path | str):
    """The JSONL audit log at ``path``, with redaction keyed by ``<path>.key``."""
    from agentguard.settings import open_audit_log

    return open_audit_log(path)


def run_with_store(url: str, fn: Callable[..., Awaitable[T]]) -> T:
    """Open the store at ``url``, run ``fn(store)`` and close it; errors exit non-zero."""
    from agentguard.store import open_store

    async def main() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return anyio.run(main)
    except AgentGuardError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc


def wide_console():
    """A rich console that does not cut ids when output goes to a pipe or file."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=240)
