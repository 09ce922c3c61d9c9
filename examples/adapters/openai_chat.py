"""Guard OpenAI Chat Completions and Responses tool calls (runs offline).

    python examples/adapters/openai_chat.py [--ask]
"""

from __future__ import annotations

from example_guard import make_guard, print_audit
from openai import OpenAI
from scripted_llm import ScriptedLLM, chat_text, chat_tool_calls, responses_calls, responses_text

from agentguard.adapters.openai import RunContext, ToolDispatcher


def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def get_weather(city: str) -> str:
    """Today's weather."""
    return f"sunny in {city}"


def main() -> None:
    guard = make_guard()
    tools = ToolDispatcher([delete_file, get_weather], guard=guard,
                           run=RunContext(principal="agent:helper", session_id="demo"))
    script = [chat_tool_calls(("get_weather", {"city": "Paris"}),
                              ("delete_file", {"path": "/etc/passwd"}),
                              ("delete_file", {"path": "/tmp/cache"})),
              chat_text("Done: weather checked, /tmp/cache deleted, /etc/passwd refused."),
              responses_calls(("delete_file", {"path": "/tmp/old.log"})),
              responses_text("Deleted /tmp/old.log.")]
    with ScriptedLLM(script) as llm:
        client = OpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)

        print("Chat Completions:")
        messages: list = [{"role": "user", "content": "Tidy up, and how is Paris?"}]
        while True:
            msg = client.chat.completions.create(model="gpt-5", messages=messages,
                                                 tools=tools.chat_tools()).choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            if not msg.tool_calls:
                print(f"  model: {msg.content}")
                break
            for result in tools.chat_sync(msg):
                print(f"  tool -> {result['content']}")
                messages.append(result)

        print("Responses API:")
        resp = client.responses.create(model="gpt-5", input="Remove old logs",
                                       tools=tools.responses_tools())
        outputs = tools.responses_sync(resp)
        for item in outputs:
            print(f"  tool -> {item['output']}")
        resp = client.responses.create(model="gpt-5", input=outputs,
                                       previous_response_id=resp.id)
        print(f"  model: {resp.output_text}")
    print_audit(guard)


if __name__ == "__main__":
    main()
