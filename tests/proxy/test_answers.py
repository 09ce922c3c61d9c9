"""The one answer shaper: era conversion, stamps, and the SDK route's own words."""

from __future__ import annotations

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    SERVER_INFO_META_KEY,
    CallToolResult,
    TextContent,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.proxy.answers import (
    INVALID_RESULT,
    InputRequired,
    Lost,
    Result,
    RpcError,
    lost_message,
    read_answer,
    shape,
    shape_result,
    timed_out,
    unstamped,
    unstamped_model,
)
from agentguard.proxy.jsontypes import JsonObject
from tests.proxy.conftest import PYTHON, ROOT, WEATHER_SERVER

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
PROXY_INFO: JsonObject = {"name": "agentguard", "version": "1"}
UPSTREAM_INFO: JsonObject = {"name": "ops", "version": "9"}


def _upstream_result(**extra: object) -> JsonObject:
    result: JsonObject = {"content": [{"type": "text", "text": "api: running"}],
                          "isError": False,
                          "_meta": {SERVER_INFO_META_KEY: UPSTREAM_INFO, "trace": "t-1"}}
    result.update(extra)  # type: ignore[arg-type]
    return result


def test_the_eras_named_here_are_the_sdks() -> None:
    assert MODERN in MODERN_PROTOCOL_VERSIONS and HANDSHAKE not in MODERN_PROTOCOL_VERSIONS


def test_the_upstream_stamp_is_removed_and_the_rest_of_meta_kept() -> None:
    result = _upstream_result()
    clean = unstamped(result)
    assert clean["_meta"] == {"trace": "t-1"}
    assert result["_meta"] == {SERVER_INFO_META_KEY: UPSTREAM_INFO, "trace": "t-1"}  # a copy
    only_stamp = unstamped({"content": [], "_meta": {SERVER_INFO_META_KEY: UPSTREAM_INFO}})
    assert "_meta" not in only_stamp
    plain: JsonObject = {"content": []}
    assert unstamped(plain) is plain  # nothing to remove: no copy


def test_a_model_from_the_sdk_route_loses_the_stamp_too() -> None:
    model = CallToolResult(content=[TextContent(type="text", text="x")],
                           _meta={SERVER_INFO_META_KEY: UPSTREAM_INFO, "trace": "t-1"})
    assert unstamped_model(model).meta == {"trace": "t-1"}
    bare = CallToolResult(content=[], _meta={SERVER_INFO_META_KEY: UPSTREAM_INFO})
    assert unstamped_model(bare).meta is None
    plain = CallToolResult(content=[])
    assert unstamped_model(plain) is plain


def test_same_era_is_not_converted_and_a_modern_client_gets_the_proxy_stamp() -> None:
    extra = {"unknownField": 1}  # a conversion would drop it: proof none ran
    shaped = shape_result(_upstream_result(**extra), MODERN, modern=True,
                          upstream_modern=True, server_info=PROXY_INFO)
    assert shaped["unknownField"] == 1
    assert shaped["resultType"] == "complete"
    assert shaped["_meta"] == {"trace": "t-1", SERVER_INFO_META_KEY: PROXY_INFO}
    legacy = shape_result(_upstream_result(**extra), HANDSHAKE, modern=False,
                          upstream_modern=False, server_info=PROXY_INFO)
    assert legacy["unknownField"] == 1 and "resultType" not in legacy
    assert legacy["_meta"] == {"trace": "t-1"}  # no stamp in the handshake era


def test_eras_that_differ_are_converted_by_the_sdk() -> None:
    down = shape_result(_upstream_result(resultType="complete", unknownField=1), HANDSHAKE,
                        modern=False, upstream_modern=True, server_info=PROXY_INFO)
    assert "unknownField" not in down and "resultType" not in down
    assert down["content"] == [{"type": "text", "text": "api: running"}]
    assert SERVER_INFO_META_KEY not in (down.get("_meta") or {})
    up = shape_result(_upstream_result(unknownField=1), MODERN, modern=True,
                      upstream_modern=False, server_info=PROXY_INFO)
    assert "unknownField" not in up and up["resultType"] == "complete"
    assert up["_meta"][SERVER_INFO_META_KEY] == PROXY_INFO  # type: ignore[index]


def test_read_answer_sorts_what_the_lane_got() -> None:
    assert read_answer(None) == Lost()
    error: JsonObject = {"code": -1, "message": "no"}
    assert read_answer({"id": 1, "error": error}) == RpcError(error)
    assert read_answer({"id": 1, "error": "junk"}) == RpcError({})
    assert read_answer({"id": 1, "result": {"content": []}}) == Result({"content": []})
    asks: JsonObject = {"resultType": "input_required", "inputRequests": {}}
    assert read_answer({"id": 1, "result": asks}) == InputRequired(asks)
    assert isinstance(read_answer({"id": 1, "result": "junk"}), InputRequired)  # SDK decides


def _shape(answer: object, *, modern: bool = True, upstream_modern: bool = True):  # type: ignore[no-untyped-def]
    return shape(answer, 7, server="ops", version=MODERN if modern else HANDSHAKE,  # type: ignore[arg-type]
                 modern=modern, upstream_modern=upstream_modern, server_info=PROXY_INFO)


def test_shape_answers_with_the_sdk_routes_words_and_statuses() -> None:
    lost = _shape(Lost())
    assert lost.lost and lost.status == 200
    assert lost.message == {"jsonrpc": "2.0", "id": 7, "error": {
        "code": INTERNAL_ERROR, "message": lost_message("ops")}}
    assert "closed the connection" in lost_message("ops")
    assert "may or may not have taken effect" in lost_message("ops")
    for code, status in ((METHOD_NOT_FOUND, 404), (INVALID_PARAMS, 400), (INTERNAL_ERROR, 200),
                         (REQUEST_TIMEOUT, 200)):
        reply = _shape(RpcError({"code": code, "message": "m"}))
        assert (reply.status, reply.lost) == (status, False)
        assert reply.message["error"] == {"code": code, "message": "m"}
    assert _shape(RpcError({"code": "x"})).status == 200
    assert _shape(InputRequired({})) is None
    done = _shape(Result(_upstream_result()))
    assert done.message["id"] == 7 and done.message["result"]["_meta"] == {  # type: ignore[index]
        "trace": "t-1", SERVER_INFO_META_KEY: PROXY_INFO}


def test_a_result_the_clients_era_cannot_carry_is_an_invalid_result(
        caplog: pytest.LogCaptureFixture) -> None:
    reply = _shape(Result({"content": "not a list"}), modern=False)
    assert reply.message["error"] == {"code": INTERNAL_ERROR, "message": INVALID_RESULT}
    assert "invalid tools/call result" in caplog.text


@pytest.mark.anyio
async def test_the_timeout_text_is_the_sdk_clients() -> None:
    """The SDK route's upstream client talks over a transport (JSON-RPC dispatcher), as here."""
    params = StdioServerParameters(command=PYTHON, args=[WEATHER_SERVER], cwd=str(ROOT))
    async with Client(params, read_timeout_seconds=0.3) as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("hang", {"seconds": 30})
    assert err.value.error.code == REQUEST_TIMEOUT
    assert err.value.error.message == timed_out("tools/call")
