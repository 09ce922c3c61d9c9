"""Guard a LangChain agent: every tool call of ``create_agent`` goes through the guard
(runs offline with a scripted chat model).

    python examples/adapters/langchain_agent.py [--ask]
"""

from __future__ import annotations

from typing import Any

import anyio
from example_guard import make_guard, print_audit
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from agentguard.adapters.langchain import GuardMiddleware, RunContext


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@tool
def get_weather(city: str) -> str:
    """Today's weather."""
    return f"sunny in {city}"


class ScriptedChat(GenericFakeChatModel):
    """Stands in for a real chat model: plays back the replies it was given."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChat:
        return self


async def main() -> None:
    guard = make_guard()
    model = ScriptedChat(messages=iter([
        AIMessage(content="", tool_calls=[
            {"name": "get_weather", "args": {"city": "Oslo"}, "id": "1"},
            {"name": "delete_file", "args": {"path": "/etc/fstab"}, "id": "2"},
            {"name": "delete_file", "args": {"path": "/tmp/x.tmp"}, "id": "3"}]),
        AIMessage(content="Deleted /tmp/x.tmp; /etc/fstab was refused. Oslo is sunny.")]))
    agent = create_agent(model, [delete_file, get_weather],
                         middleware=[GuardMiddleware(guard=guard)], context_schema=RunContext)
    out = await agent.ainvoke({"messages": [("user", "Tidy up; weather in Oslo?")]},
                              context=RunContext(principal="agent:helper", session_id="demo"))
    for message in out["messages"]:
        if isinstance(message, ToolMessage):
            print(f"  tool [{message.status}] -> {message.content}")
    print(f"  model: {out['messages'][-1].content}")
    print_audit(guard)


if __name__ == "__main__":
    anyio.run(main)
