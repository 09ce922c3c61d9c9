"""Hostile bytes on the proxy's stdin: each gets the matching JSON-RPC error, none kills it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp.types import INVALID_REQUEST, PARSE_ERROR, JSONRPCRequest

from agentguard.proxy import wire
from agentguard.proxy.wire import WireError, decode, encode, parse_line
from tests.proxy.conftest import PYTHON, ProxyUnderTest

DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize(("line", "code"), [
    (b"42", INVALID_REQUEST),
    (b'"hello"', INVALID_REQUEST),
    (b"null", INVALID_REQUEST),
    (b"true", INVALID_REQUEST),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
    (b"[]", INVALID_REQUEST),
    (DEEP, INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b'{"a":' * 150 + b"1"
     + b"}" * 150 + b"}", INVALID_REQUEST),
    (b"{not json", PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"', PARSE_ERROR),
    (b"\xff\xfe\x00{}", PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}', PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}', PARSE_ERROR),
    (b'{"jsonrpc":"1.0","id":3,"method":"ping"}', INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":4,"method":"ping","params":[1,2]}', INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}', INVALID_REQUEST),
])
def test_bad_lines_map_to_json_rpc_errors(line: bytes, code: int) -> None:
    with pytest.raises(WireError) as err:
        parse_line(line)
    assert err.value.error.code == code


def test_the_request_id_is_kept_when_it_can_be_read() -> None:
    with pytest.raises(WireError) as err:
        parse_line(b'{"jsonrpc":"1.0","id":"abc","method":"ping"}')
    assert err.value.request_id == "abc"
    with pytest.raises(WireError) as err:
        parse_line(b'{"jsonrpc":"1.0","id":true,"method":"ping"}')
    assert err.value.request_id is None  # a boolean is not a JSON-RPC id


def test_good_lines_parse() -> None:
    assert parse_line(b"   \r") is None
    message = parse_line(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}\r')
    assert message is not None and isinstance(message.message, JSONRPCRequest)
    assert message.message.id == 7


async def _exchange(proc: Process, line: bytes, buffer: bytearray) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdin.send(line + b"\n")
    with anyio.fail_after(20):
        while b"\n" not in buffer:
            buffer.extend(await proc.stdout.receive())
    raw, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(raw)


@pytest.mark.parametrize("text", [
    b'{"id":1,"result":{"big":123456789012345678901234567890,"neg":-98765432109876543210}}',
    b'{"id":1,"result":{"max":18446744073709551615,"min":-9223372036854775808}}',
    b'{"result":{"x":NaN,"y":Infinity,"z":1e400}}',
    b'{"result":"\\ud800 lone surrogate"}',
    b'{"a":1,"a":2,"s":"\\u00e9\\u2028","f":1e-05,"t":[true,false,null]}',
])
def test_decoding_an_upstream_answer_matches_json_loads_exactly(text: bytes) -> None:
    assert repr(decode(text)) == repr(json.loads(text))  # repr: NaN != NaN


def test_decoding_refuses_what_json_loads_refuses() -> None:
    for text in (b"{not json", b'{"a":', b"\xff"):
        with pytest.raises(ValueError):
            decode(text)


def test_encoding_round_trips_and_writes_non_finite_numbers_as_null() -> None:
    value = {"id": 2**70, "text": "é\u2028\n\"", "n": [1, -1.5, 1e-05, True, None],
             "deep": {"k": {"k": []}}}
    line = encode(value)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line) == value
    assert json.loads(encode({1: "int key"})) == {"1": "int key"}  # the json module's rule
    assert json.loads(encode({"x": float("nan"), "y": float("inf")})) == {"x": None, "y": None}


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_hostile_stdin_never_takes_the_proxy_down(proxy: ProxyUnderTest) -> None:
    args = proxy.ops().args
    async with await anyio.open_process([PYTHON, *args], env=proxy.env(),
                                        stderr=None) as proc:
        buf = bytearray()
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}
        answer = await _exchange(proc, json.dumps(hello).encode(), buf)
        assert answer["result"]["serverInfo"]["name"] == "agentguard-proxy"
        assert proc.stdin is not None
        await proc.stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        oversized = (b'{"jsonrpc":"2.0","id":50,"method":"tools/call","params":{"name":'
                     b'"get_status","arguments":{"service":"' + b"x" * (5 * 1024 * 1024)
                     + b'"}}}')
        hostile: list[tuple[bytes, int]] = [
            (b"12345", INVALID_REQUEST),
            (b'[{"jsonrpc":"2.0","id":2,"method":"ping"}]', INVALID_REQUEST),
            (DEEP, INVALID_REQUEST),
            (b"{this is not json", PARSE_ERROR),
            (b"\xc3\x28\xa0\xa1", PARSE_ERROR),
            (oversized, INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","id":3,"method":"no/such/method"}', -32601),
            (b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"nope"}}',
             -32602),
            (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_status",'
             b'"arguments":"not an object"}}', -32602),
        ]
        for line, code in hostile:
            answer = await _exchange(proc, line, buf)
            assert answer["error"]["code"] == code, (line[:60], answer)
        # A deeply nested argument on a call the guard must decide is refused, not run.
        nested: Any = "x"
        for _ in range(70):
            nested = [nested]
        deep_call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {
            "name": "delete_file", "arguments": {"path": nested}}}
        answer = await _exchange(proc, json.dumps(deep_call).encode(), buf)
        assert answer["result"]["isError"] is True
        assert "nested deeper" in answer["result"]["content"][0]["text"]
        ok = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
              "params": {"name": "get_status", "arguments": {"service": "api"}}}
        answer = await _exchange(proc, json.dumps(ok).encode(), buf)
        assert answer["id"] == 7 and answer["result"]["isError"] is False
        await proc.stdin.aclose()
        with anyio.fail_after(20):
            assert await proc.wait() == 0


@pytest.mark.parametrize("line", [
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}',  # duplicate, compact
    b'{"a":{"b":1,"b":2},"id":1}',
    b'{"id":18446744073709551616,"x":1}',
    b'{"id":1,"x":1.0,"y":1e5,"z":-0.0,"s":"\\u00e9\\n\xc3\xa9"}',
    b'{"id":1,"x":NaN}',
    b'{"id":1,"s":"\\ud800"}',
    b' {"id":1}',
    b'null',
    b'12345',
    b'[1,2]',
    b'{"id":true,"method":"ping"}',
    b"[" * 300 + b"]" * 300,
    b'{"x":' + b"[" * 150 + b"]" * 150 + b"}",
])
def test_the_compact_fast_path_reads_as_the_json_module_does(
        line: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def read() -> object:
        try:
            return wire.parse_value(line)
        except WireError as exc:
            return ("error", exc.error.code, str(exc))

    fast = read()
    monkeypatch.setattr(wire, "_compact", lambda line: None)  # the json module only
    assert fast == read()
    if isinstance(fast, dict):
        assert fast == json.loads(line)
