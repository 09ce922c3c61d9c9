"""``python -m agentguard.proxy [OPTIONS] -- CMD ARGS...`` (same as ``agentguard proxy``)."""

from __future__ import annotations

import sys

from agentguard.proxy.early_spawn import start_early

if __name__ == "__main__":
    start_early(sys.argv[1:])  # before the SDK and typer load: see agentguard.proxy.early_spawn
    from agentguard.cli.proxy_cmd import standalone_app

    standalone_app()
