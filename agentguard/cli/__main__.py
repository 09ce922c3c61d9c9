"""``python -m agentguard.cli``."""

from agentguard.cli.app import main

main()
