"""``python -m agentguard.cli``."""

from agentguard.cli import main

main()
