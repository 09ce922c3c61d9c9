"""Guard an OpenAI Agents SDK agent: guarded function tools, and the SDK's approval
interruptions answered by agentguard's channels (runs offline).

    python examples/adapters/openai_agents.py [--ask]
"""

from __future__ import annotations

import anyio
from agents import Agent, OpenAIResponsesModel, function_tool, set_tracing_disabled
from example_guard import make_guard, print_audit
from openai import AsyncOpenAI
from scripted_llm import ScriptedLLM, responses_calls, responses_text

from agentguard.adapters.openai import RunContext, guard_function_tools, run_guarded


def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def drop_database(name: str) -> str:
    """Drop a database."""
    return f"dropped {name}"


async def main() -> None:
    set_tracing_disabled(True)  # traces would go to the internet
    guard = make_guard()
    # drop_database also declares needs_approval: the run pauses, and run_guarded answers
    # the pause through the guard (here the policy denies it outright).
    tools = guard_function_tools([function_tool(delete_file),
                                  function_tool(drop_database, needs_approval=True)],
                                 guard=guard)
    script = [responses_calls(("delete_file", {"path": "/etc/hosts"}),
                              ("delete_file", {"path": "/tmp/build"}),
                              ("drop_database", {"name": "prod"})),
              responses_text("Deleted /tmp/build; /etc/hosts and the database were refused.")]
    with ScriptedLLM(script) as llm:
        model = OpenAIResponsesModel(model="gpt-5", openai_client=AsyncOpenAI(
            base_url=llm.openai_url, api_key="offline", max_retries=0))
        agent = Agent(name="ops", instructions="Keep the machine tidy.", model=model,
                      tools=tools)
        result = await run_guarded(agent, "Clean up", guard=guard,
                                   context=RunContext(principal="agent:ops", session_id="demo"))
        for _, body in llm.requests[1:]:
            for item in body["input"]:
                if item.get("type") == "function_call_output":
                    print(f"  tool -> {item['output']}")
    print(f"  model: {result.final_output}")
    print_audit(guard)


if __name__ == "__main__":
    anyio.run(main)
