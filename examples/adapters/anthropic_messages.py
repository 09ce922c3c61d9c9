"""Guard Anthropic tool use: a dispatcher for tool_use blocks, and guarded tools for the
SDK's tool runner (runs offline).

    python examples/adapters/anthropic_messages.py [--ask]
"""

from __future__ import annotations

from anthropic import Anthropic, beta_tool
from example_guard import make_guard, print_audit
from scripted_llm import ScriptedLLM, anthropic_text, anthropic_tool_uses

from agentguard import acting_as
from agentguard.adapters.anthropic import RunContext, ToolDispatcher, guard_beta_tools


def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: The file to delete.
    """
    return f"deleted {path}"


def main() -> None:
    guard = make_guard()
    script = [anthropic_tool_uses(("delete_file", {"path": "/var/log/syslog"}),
                                  ("delete_file", {"path": "/tmp/a.log"})),
              anthropic_text("Deleted /tmp/a.log; /var/log/syslog was refused."),
              anthropic_tool_uses(("delete_file", {"path": "/home/me/notes"})),
              anthropic_text("I was not allowed to delete your notes.")]
    with ScriptedLLM(script) as llm:
        client = Anthropic(base_url=llm.url, api_key="offline", max_retries=0)

        print("Messages API with the dispatcher:")
        tools = ToolDispatcher([delete_file], guard=guard,
                               run=RunContext(principal="agent:claude", session_id="demo"))
        messages: list = [{"role": "user", "content": "Clear the logs"}]
        while True:
            msg = client.messages.create(model="claude-sonnet-5-5", max_tokens=1024,
                                         messages=messages, tools=tools.tools())
            messages.append({"role": "assistant", "content": msg.content})
            if msg.stop_reason != "tool_use":
                print(f"  model: {msg.content[0].text}")
                break
            reply = tools.reply_sync(msg)
            for block in reply["content"]:
                flag = " (is_error)" if block.get("is_error") else ""
                print(f"  tool -> {block['content']}{flag}")
            messages.append(reply)

        print("Tool runner with guarded tools:")
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-5-5", max_tokens=1024,
            messages=[{"role": "user", "content": "Delete my notes"}],
            tools=guard_beta_tools([beta_tool(delete_file)], guard=guard))
        with acting_as("agent:claude", session_id="demo"):
            final = runner.until_done()
        print(f"  model: {final.content[0].text}")
    print_audit(guard)


if __name__ == "__main__":
    main()
