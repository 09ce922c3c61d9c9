"""The tools of the conformance target server, named and shaped as the MCP conformance suite's
server scenarios (npm ``@modelcontextprotocol/conformance`` 0.1.16) call them.

Written from the suite's scenario checks, on the low-level server API of the ``mcp`` SDK, so
that every schema goes on the wire exactly as written here (the 2020-12 keywords, SEP-1330 enum
forms) instead of being regenerated from type hints.
"""

from __future__ import annotations

import base64
import io
import warnings
import wave
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["AUDIO_WAV_B64", "PNG_B64", "TOOLS", "call_tool"]

# A 1x1 red PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def _silent_wav() -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 80)
    return base64.b64encode(buf.getvalue()).decode()


AUDIO_WAV_B64 = _silent_wav()

_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
_READ_ONLY = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)

Ctx = ServerRequestContext[Any, Any]
ToolResult = types.CallToolResult | types.InputRequiredResult
Handler = Callable[[Ctx, types.CallToolRequestParams], Awaitable[ToolResult]]


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")


def _result(*content: Any, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


async def _simple_text(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(_text("This is a simple text response for testing."))


async def _image_content(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(_image())


async def _audio_content(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(types.AudioContent(type="audio", data=AUDIO_WAV_B64, mime_type="audio/wav"))


def _embedded(uri: str, mime_type: str, text: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource",
        resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=text),
    )


async def _embedded_resource(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(
        _embedded("test://embedded-resource", "text/plain", "This is an embedded resource content.")
    )


async def _mixed(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(
        _text("Multiple content types test:"),
        _image(),
        _embedded("test://mixed-content-resource", "application/json",
                  '{"test":"data","value":123}'),
    )


async def _with_logging(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    # Logging is deprecated for the 2026-07-28 era; the suite speaks 2025-11-25, where it is not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        for i, message in enumerate(("Tool execution started", "Tool processing data",
                                     "Tool execution completed")):
            if i:
                await anyio.sleep(0.05)
            await ctx.session.send_log_message("info", message, logger="everything",
                                               related_request_id=ctx.request_id)
    return _result(_text("Tool with logging executed successfully"))


async def _error(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(_text("This tool intentionally returns an error for testing"), is_error=True)


async def _with_progress(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    for step in (0, 50, 100):
        await ctx.session.report_progress(step, 100, f"step {step}")
        await anyio.sleep(0.05)
    return _result(_text("Tool with progress completed"))


_ASK = "ask"


async def _ask(ctx: Ctx, params: types.CallToolRequestParams, request: Any,
               result_type: type[Any]) -> Any:
    """Ask the client (sampling or elicitation) the way the connection's era does it.

    Handshake era: a server-to-client request in the middle of the call. 2026-07-28: an
    ``InputRequiredResult`` now, the answer in ``input_responses`` of the client's retry.
    Returns the answer, or the ``InputRequiredResult`` to send back.
    """
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        meta = ServerMessageMetadata(related_request_id=ctx.request_id)
        return await ctx.session.send_request(request, result_type, metadata=meta)
    answer = (params.input_responses or {}).get(_ASK)
    if answer is None:
        return types.InputRequiredResult(input_requests={_ASK: request}, request_state=_ASK)
    return result_type.model_validate(answer.model_dump(by_alias=True, mode="json"))


async def _sampling(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    prompt = str((params.arguments or {}).get("prompt", ""))
    request = types.CreateMessageRequest(params=types.CreateMessageRequestParams(
        messages=[types.SamplingMessage(role="user", content=_text(prompt))], max_tokens=100))
    answer = await _ask(ctx, params, request, types.CreateMessageResult)
    if isinstance(answer, types.InputRequiredResult):
        return answer
    content = answer.content
    text = content.text if isinstance(content, types.TextContent) else str(content)
    return _result(_text(f"LLM response: {text}"))


async def _elicit(ctx: Ctx, params: types.CallToolRequestParams, message: str,
                  schema: dict[str, Any]) -> ToolResult:
    request = types.ElicitRequest(
        params=types.ElicitRequestFormParams(message=message, requested_schema=schema))
    answer = await _ask(ctx, params, request, types.ElicitResult)
    if isinstance(answer, types.InputRequiredResult):
        return answer
    return _result(_text(f"Elicitation completed: action={answer.action}, "
                         f"content={answer.content}"))


async def _elicitation(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "Your username"},
            "email": {"type": "string", "description": "Your email address"},
        },
        "required": ["username", "email"],
    }
    message = str((params.arguments or {}).get("message", "Please provide your information"))
    return await _elicit(ctx, params, message, schema)


async def _elicitation_defaults(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {"type": "string", "description": "User status",
                       "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "description": "Verified user", "default": True},
        },
        "required": [],
    }
    return await _elicit(ctx, params, "Please review and update the form fields with defaults",
                         schema)


def _titled(prefix: str) -> list[dict[str, str]]:
    return [{"const": f"{prefix}{i}", "title": f"{prefix.title()} {i}"} for i in (1, 2, 3)]


async def _elicitation_enums(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    options = ["option1", "option2", "option3"]
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "description": "Untitled single select",
                               "enum": options},
            "titledSingle": {"type": "string", "description": "Titled single select",
                             "oneOf": _titled("value")},
            "legacyEnum": {"type": "string", "description": "Legacy titled enum",
                           "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "description": "Untitled multi select",
                              "items": {"type": "string", "enum": options}},
            "titledMulti": {"type": "array", "description": "Titled multi select",
                            "items": {"anyOf": _titled("value")}},
        },
        "required": [],
    }
    return await _elicit(ctx, params, "Please select options from the enum fields", schema)


async def _json_schema_2020_12(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    return _result(_text(f"received: {sorted(params.arguments or {})}"))


async def _reconnection(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    # SEP-1699 polling: end the POST's SSE stream mid-call; the client resumes with
    # Last-Event-ID and gets the result replayed from the event store.
    if ctx.close_sse_stream is not None:
        await ctx.close_sse_stream()
    await anyio.sleep(0.1)
    return _result(_text("Reconnection test completed"))


_JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

_SPECS: list[tuple[str, str, dict[str, Any], Handler]] = [
    ("test_simple_text", "Returns simple text content", _NO_ARGS, _simple_text),
    ("test_image_content", "Returns image content", _NO_ARGS, _image_content),
    ("test_audio_content", "Returns audio content", _NO_ARGS, _audio_content),
    ("test_embedded_resource", "Returns an embedded resource", _NO_ARGS, _embedded_resource),
    ("test_multiple_content_types", "Returns text, image and resource content", _NO_ARGS, _mixed),
    ("test_tool_with_logging", "Sends three log notifications while running", _NO_ARGS,
     _with_logging),
    ("test_error_handling", "Returns a tool error (isError: true)", _NO_ARGS, _error),
    ("test_tool_with_progress", "Reports progress three times", _NO_ARGS, _with_progress),
    ("test_sampling", "Asks the client's model (sampling/createMessage)",
     {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
     _sampling),
    ("test_elicitation", "Asks the user for a username and email (elicitation/create)",
     {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
     _elicitation),
    ("test_elicitation_sep1034_defaults", "Elicits a form whose fields have defaults (SEP-1034)",
     _NO_ARGS, _elicitation_defaults),
    ("test_elicitation_sep1330_enums", "Elicits every enum form of SEP-1330", _NO_ARGS,
     _elicitation_enums),
    ("json_schema_2020_12_tool", "Takes a JSON Schema 2020-12 input ($schema, $defs)",
     _JSON_SCHEMA_2020_12, _json_schema_2020_12),
    ("test_reconnection", "Closes its SSE stream mid-call so the client resumes (SEP-1699)",
     _NO_ARGS, _reconnection),
]

TOOLS: list[types.Tool] = [
    types.Tool(name=name, description=description, input_schema=schema, annotations=_READ_ONLY)
    for name, description, schema, _ in _SPECS
]
_HANDLERS: dict[str, Handler] = {name: handler for name, _, _, handler in _SPECS}


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
    """Run one of ``TOOLS``; an unknown name is a tool error, as the spec's examples show."""
    handler = _HANDLERS.get(params.name)
    if handler is None:
        return _result(_text(f"Unknown tool: {params.name}"), is_error=True)
    return await handler(ctx, params)
