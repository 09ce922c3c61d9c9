"""``python -m agentguard.proxy [OPTIONS] -- CMD ARGS...`` (same as ``agentguard proxy``)."""

from __future__ import annotations

from agentguard.cli.proxy_cmd import standalone_app

if __name__ == "__main__":
    standalone_app()
