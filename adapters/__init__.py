"""Framework adapters: step-up authentication in each framework's own idiom.

Import the one you use; nothing here loads a framework until you do:

- :mod:`agentguard.adapters.langchain` — guarded tools and a ``create_agent`` middleware
  (``pip install 'agentguard[langchain]'``).
- :mod:`agentguard.adapters.openai` — a dispatcher for Chat Completions and Responses tool
  calls, and Agents SDK function tools and approval interruptions
  (``pip install 'agentguard[openai]'`` for the Agents SDK).
- :mod:`agentguard.adapters.anthropic` — a dispatcher for ``tool_use`` blocks and guarded
  tools for the SDK's tool runner (``pip install 'agentguard[anthropic]'`` for the runner).
- :mod:`agentguard.adapters.mcp` — guard the tools of an MCP server in your own process.

Every adapter accepts a :class:`RunContext` saying who calls (principal, session, source
address, claims), per call or per agent run.
"""

from agentguard.adapters._common import RunContext

__all__ = ["RunContext"]
