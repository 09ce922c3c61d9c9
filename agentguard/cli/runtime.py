"""Opening the shared parts (store, audit log) for CLI commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import typer

from agentguard.errors import AgentGuardError

__all__ = ["fail", "open_audit", "run_with_store", "wide_console"]

T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code)


def open_audit(path: Path):
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
        raise fail(str(exc)) from exc


def wide_console():
    """A rich console that does not cut ids when output goes to a pipe or file."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=240)
