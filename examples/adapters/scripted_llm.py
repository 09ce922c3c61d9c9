"""A scripted model server on 127.0.0.1, so the adapter examples (and tests) run offline.

It speaks just enough of the OpenAI (Chat Completions, Responses) and Anthropic (Messages)
HTTP APIs for the official clients: each POST gets the next scripted reply, and every
request body is kept so you can see what the model was sent (e.g. a refusal)::

    with ScriptedLLM([responses_calls(("delete_file", {"path": "/tmp/x"})),
                      responses_text("done")]) as llm:
        client = OpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ScriptedLLM",
    "anthropic_text",
    "anthropic_tool_uses",
    "chat_text",
    "chat_tool_calls",
    "responses_calls",
    "responses_text",
]

Reply = dict[str, Any]
Script = Callable[[str, dict[str, Any]], Reply]
_ids = itertools.count(1)
_USAGE_OPENAI = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
_USAGE_RESPONSES = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0}}


def chat_tool_calls(*calls: tuple[str, dict[str, Any]]) -> Reply:
    """A Chat Completions reply asking for these tool calls."""
    tool_calls = [{"id": f"call_{next(_ids)}", "type": "function",
                   "function": {"name": name, "arguments": json.dumps(args)}}
                  for name, args in calls]
    return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 0,
            "model": "scripted", "usage": _USAGE_OPENAI,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": tool_calls}}]}


def chat_text(text: str) -> Reply:
    """A Chat Completions reply with a final text."""
    return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 0,
            "model": "scripted", "usage": _USAGE_OPENAI,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}


def _response(output: list[dict[str, Any]]) -> Reply:
    return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": 0,
            "status": "completed", "model": "scripted", "output": output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": _USAGE_RESPONSES}


def responses_calls(*calls: tuple[str, dict[str, Any]]) -> Reply:
    """A Responses API reply with these ``function_call`` items."""
    return _response([{"type": "function_call", "id": f"fc_{next(_ids)}",
                       "call_id": f"call_{next(_ids)}", "name": name,
                       "arguments": json.dumps(args), "status": "completed"}
                      for name, args in calls])


def responses_text(text: str) -> Reply:
    """A Responses API reply with a final message."""
    return _response([{"type": "message", "id": f"msg_{next(_ids)}", "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]}])


def anthropic_tool_uses(*calls: tuple[str, dict[str, Any]]) -> Reply:
    """A Messages API reply with these ``tool_use`` blocks."""
    return {"id": f"msg_{next(_ids)}", "type": "message", "role": "assistant",
            "model": "scripted", "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "content": [{"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": name,
                         "input": args} for name, args in calls]}


def anthropic_text(text: str) -> Reply:
    """A Messages API reply with a final text."""
    return {"id": f"msg_{next(_ids)}", "type": "message", "role": "assistant",
            "model": "scripted", "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "content": [{"type": "text", "text": text}]}


class ScriptedLLM:
    """A local HTTP server answering model API calls from a script.

    Args:
        script: Replies given in order to successive POSTs, or a function
            ``(path, request_json) -> reply``.

    Attributes:
        requests: ``(path, request_json)`` of every POST received, oldest first.
    """

    def __init__(self, script: Iterable[Reply] | Script) -> None:
        if callable(script):
            self._script: Script = script
        else:
            replies = iter(list(script))
            self._script = lambda path, body: next(replies)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_url(self) -> str:
        """``base_url`` for the OpenAI client."""
        return self.url + "/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with llm._lock:
                    llm.requests.append((self.path, body))
                    try:
                        reply, status = llm._script(self.path, body), 200
                    except StopIteration:
                        reply, status = {"error": {"message": "the script has no more "
                                                   "replies", "type": "scripted"}}, 500
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
