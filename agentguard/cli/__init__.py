"""Command line interface (``agentguard ...``)."""

from agentguard.cli.app import app, main

__all__ = ["app", "main"]
