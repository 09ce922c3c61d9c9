"""Upstream transports that are also lanes for relayed calls.

Both transports hand the SDK client the usual pair of ``SessionMessage`` streams, and also
offer :meth:`LaneBase.start`: send a request under a proxy-owned id (``agentguard-relay-N``)
and have a callback called with its answer (a plain dict), without the SDK's session layer
and, on stdio, without a task switch.

- :class:`RawStdio` spawns a stdio upstream itself (or adopts the identical one the command
  line started early, see :mod:`agentguard.proxy.early_spawn`) and reads and writes its pipes
  directly. It replaces the SDK's ``stdio_client`` for the proxy: same framing (one JSON-RPC
  message per line), the child in its own session, same shutdown (close stdin, then SIGTERM,
  then SIGKILL to its process group). POSIX only.
- :class:`SdkTransportLane` wraps any other transport (Streamable HTTP): relayed requests go through
  the SDK transport, answers to them are taken off its read stream.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp.types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)

from agentguard.proxy.early_spawn import Launch, claim
from agentguard.proxy.fdio import FdReader, FdWriter
from agentguard.proxy.wire import decode, encode, serialize

__all__ = ["ENVELOPE_KEYS", "LaneBase", "RawStdio", "SdkTransportLane"]

logger = logging.getLogger(__name__)

PREFIX = "agentguard-relay-"
_MARK = PREFIX.encode()
ENVELOPE_KEYS = (PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY,
                 LOG_LEVEL_META_KEY)
"""The ``_meta`` keys the SDK client puts on each 2026-07-28 request (its envelope)."""
Answer = Callable[[dict[str, Any] | None], None]
Wait = Callable[[], Awaitable[dict[str, Any] | None]]


class LaneBase(ABC):
    """Ids, callbacks and failure-on-close, shared by both transports."""

    carries_headers = True
    """The transport sends the SDK's per-request HTTP headers (see ``Lane``)."""

    def __init__(self) -> None:
        self._callbacks: dict[str, Answer] = {}
        self._next = 0
        self.closed = False
        self.envelope: dict[str, Any] | None = None
        """The SDK client's 2026-07-28 envelope, learned from its first stamped request."""

    def _learn(self, item: Any) -> None:
        """Record the envelope the SDK client stamps on its requests (the proxy's own
        ``tools/list`` precedes any relay, as a relayed tool must have been listed).

        The SDK has no public way to stamp a request it does not send itself, so the lane,
        which carries every byte the SDK writes, reads the envelope off the wire instead.
        """
        message = getattr(item, "message", None)
        if not isinstance(message, JSONRPCRequest) or not isinstance(message.params, dict):
            return
        meta = message.params.get("_meta")
        if isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta:
            self.envelope = {k: meta[k] for k in ENVELOPE_KEYS if k in meta}

    def pending(self) -> int:
        """How many relayed requests await their answer."""
        return len(self._callbacks)

    def _resolve(self, rid: str, answer: dict[str, Any]) -> bool:
        callback = self._callbacks.pop(rid, None)
        if callback is None:
            return False
        callback(answer)
        return True

    def _fail_all(self) -> None:
        self.closed = True
        callbacks, self._callbacks = self._callbacks, {}
        for callback in callbacks.values():
            callback(None)

    @abstractmethod
    def _send_nowait(self, message: dict[str, Any], headers: dict[str, str] | None) -> None:
        """Write one message to the upstream without waiting (each transport does it)."""

    def start(self, method: str, params: dict[str, Any], headers: dict[str, str] | None,
              on_answer: Answer) -> str | None:
        """Send a request under a proxy-owned id; ``on_answer`` gets the JSON-RPC answer as
        a dict, or ``None`` if the connection closes first. Returns the id (None: closed)."""
        if self.closed:
            return None
        self._next += 1
        rid = f"{PREFIX}{self._next}"
        self._callbacks[rid] = on_answer
        self._send_nowait({"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
                          headers)
        return rid

    def forget(self, rid: str) -> None:
        """Drop a request's callback and tell the upstream it was cancelled."""
        if self._callbacks.pop(rid, None) is not None and not self.closed:
            self._send_nowait({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": rid, "reason": "cancelled"}}, None)

    async def begin(self, method: str, params: dict[str, Any],
                    headers: dict[str, str] | None) -> tuple[str, Wait]:
        """:meth:`start` for async callers: returns the id and a wait for the answer."""
        event, box = anyio.Event(), []

        def done(answer: dict[str, Any] | None) -> None:
            box.append(answer)
            event.set()

        rid = self.start(method, params, headers, done)
        if rid is None:
            done(None)

        async def wait() -> dict[str, Any] | None:
            await event.wait()
            return box[0]

        return rid or "", wait

    async def cancel(self, rid: str) -> None:
        """Async spelling of :meth:`forget`."""
        self.forget(rid)


class RawStdio(LaneBase):
    """A stdio upstream on raw pipes (an SDK ``Transport``)."""

    carries_headers = False

    def __init__(self, command: str, args: list[str], env: dict[str, str], cwd: str) -> None:
        super().__init__()
        self._argv = [command, *args]
        self._env = env
        self._cwd = cwd
        self._stack = AsyncExitStack()
        self._proc: _Child | None = None
        self._writer: FdWriter | None = None
        self._reader: FdReader | None = None

    async def __aenter__(self) -> Any:
        early = claim(self.launch)
        if early is not None:
            # Started by the command line while the proxy was importing, exactly as below.
            logger.debug("adopted upstream process %d, started early", early.process.pid)
            self._proc = _Popened(early.process)
            to_child, from_child = early.to_child, early.from_child
        else:
            to_child, from_child = await self._spawn()
        self._stack.callback(os.close, from_child)
        self._stack.callback(self._close_stdin)
        to_sdk, from_upstream = anyio.create_memory_object_stream[SessionMessage | Exception](64)
        to_upstream, from_sdk = anyio.create_memory_object_stream[SessionMessage](64)
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._shutdown)
        self._stack.callback(tg.cancel_scope.cancel)
        self._writer = FdWriter(to_child, tg.start_soon, self._fail_all)
        self._reader = FdReader(from_child)
        tg.start_soon(self._read_loop, to_sdk)
        tg.start_soon(self._write_loop, from_sdk)
        return from_upstream, to_upstream

    @property
    def launch(self) -> Launch:
        """What this transport starts: command line, environment, working directory."""
        return Launch(tuple(self._argv), dict(self._env), self._cwd)

    async def _spawn(self) -> tuple[int, int]:
        """Start the upstream; returns the proxy's ends of its stdin and stdout."""
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        try:
            # Its own session, like the SDK's transport: a Ctrl-C at the proxy's terminal is
            # the proxy's to handle, and the whole process group can be stopped at the end.
            self._proc = await anyio.open_process(
                self._argv, env=self._env, cwd=self._cwd, stdin=child_in, stdout=child_out,
                stderr=sys.stderr, start_new_session=True)
        except BaseException:
            for fd in (to_child, from_child):
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        return to_child, from_child

    async def __aexit__(self, *exc: Any) -> Any:
        self._fail_all()
        return await self._stack.__aexit__(*exc)

    async def _shutdown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            if self._writer is not None:
                with anyio.move_on_after(2):
                    await self._writer.drain()
            self._close_stdin()  # EOF on the child's stdin: its cue to exit
            with anyio.move_on_after(2):
                await proc.wait()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.returncode is not None:
                    break
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                with anyio.move_on_after(2):
                    await proc.wait()

    def _close_stdin(self) -> None:
        writer = self._writer
        if writer is not None and not writer.closed:
            writer.closed = True
            with suppress(OSError):
                os.close(writer.fd)

    def _send_nowait(self, message: dict[str, Any], headers: dict[str, str] | None) -> None:
        assert self._writer is not None
        self._writer.write_nowait(encode(message))  # a failed write fails every request

    async def _write_loop(self, from_sdk: Any) -> None:
        assert self._writer is not None
        async with from_sdk:
            async for message in from_sdk:
                if self.envelope is None:
                    self._learn(message)
                await self._writer.write(serialize(message))
                if self._writer.closed:
                    self._fail_all()
                    return

    async def _read_loop(self, to_sdk: MemoryObjectSendStream[SessionMessage | Exception]
                         ) -> None:
        assert self._reader is not None
        buf = bytearray()

        def intercept(chunk: bytes) -> bytes:
            # In the reader's readiness callback, with every earlier line dealt with (``buf``
            # holds at most the head of a line): answers to relayed requests are resolved
            # here without a task switch, as many as the chunk holds, and their answers to
            # the client written together when the callback ends. From the first line that
            # is not one (the SDK's, or a partial line), the rest is the loop's below.
            start = 0
            if buf:
                nl = chunk.find(b"\n")
                if nl < 0 or not self._relayed(bytes(buf) + chunk[:nl]):
                    return chunk
                buf.clear()
                start = nl + 1
            while (nl := chunk.find(b"\n", start)) >= 0 and self._relayed(chunk[start:nl]):
                start = nl + 1
            return chunk[start:] if start else chunk

        self._reader.intercept = intercept
        try:
            async with to_sdk:
                while chunk := await self._reader.read():
                    buf += chunk
                    start = 0
                    while (nl := buf.find(b"\n", start)) >= 0:
                        await self._line(bytes(buf[start:nl]), to_sdk)
                        start = nl + 1
                    del buf[:start]
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass
        finally:
            self._reader.close()
            self._fail_all()

    def _relayed(self, line: bytes) -> bool:
        """Resolve ``line`` if it answers a relayed request (True); else it is the SDK's."""
        if _MARK not in line:
            return False
        try:
            value = decode(line)
        except ValueError:
            return False
        return isinstance(value, dict) and "method" not in value and \
            isinstance(value.get("id"), str) and self._resolve(value["id"], value)

    async def _line(self, line: bytes, to_sdk: MemoryObjectSendStream[Any]) -> None:
        if not line.strip() or self._relayed(line):
            return
        try:
            message = jsonrpc_message_adapter.validate_json(line, by_name=False)
        except Exception as exc:  # the SDK's stdio transport hands these over as exceptions
            await to_sdk.send(exc)
            return
        await to_sdk.send(SessionMessage(message))


class _Child(Protocol):
    """What the transport needs of its child process (anyio's, or one adopted)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class _Popened:
    """An upstream process the command line started (a ``subprocess.Popen``), as a
    :class:`_Child`. Its exit is polled: only the shutdown waits for it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    async def wait(self) -> int:
        while (code := self._process.poll()) is None:
            await anyio.sleep(0.02)
        return code


class SdkTransportLane(LaneBase):
    """Any SDK transport (Streamable HTTP) with relayed requests going through it."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner
        self._stack = AsyncExitStack()
        self._write_stream: MemoryObjectSendStream[SessionMessage] | None = None
        self._session_send: MemoryObjectSendStream[SessionMessage | Exception] | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Any:
        read, write = await self._stack.enter_async_context(self._inner)
        self._write_stream = write
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](64)
        self._session_send = send
        sdk_writes, written = anyio.create_memory_object_stream[SessionMessage](64)
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(self._tg.cancel_scope.cancel)
        self._tg.start_soon(self._relay, read, send)
        self._tg.start_soon(self._watch, written, write)
        return receive, sdk_writes

    async def _watch(self, written: Any, write: Any) -> None:
        """Pass the SDK's messages to its transport, learning its envelope on the way."""
        try:
            async with written:
                async for item in written:
                    if self.envelope is None:
                        self._learn(item)
                    await write.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            with suppress(Exception):
                await write.aclose()

    async def __aexit__(self, *exc: Any) -> Any:
        self._fail_all()
        return await self._stack.__aexit__(*exc)

    async def _relay(self, read: Any, send: MemoryObjectSendStream[Any]) -> None:
        try:
            async with send:
                async for item in read:
                    message = getattr(item, "message", None)
                    if isinstance(message, JSONRPCResponse | JSONRPCError) and \
                            isinstance(message.id, str) and message.id.startswith(PREFIX) and \
                            self._resolve(message.id, message.model_dump(
                                by_alias=True, mode="json", exclude_none=True)):
                        continue
                    await send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._fail_all()

    def _send_nowait(self, message: dict[str, Any], headers: dict[str, str] | None) -> None:
        assert self._write_stream is not None and self._tg is not None
        wire = JSONRPCRequest(**message) if "id" in message else JSONRPCNotification(**message)
        item = SessionMessage(wire, ClientMessageMetadata(headers=headers) if headers else None)
        # The SDK's HTTP write stream has no send_nowait; a task sends it.
        self._tg.start_soon(self._send, item)

    async def _send(self, item: SessionMessage) -> None:
        assert self._write_stream is not None
        try:
            await self._write_stream.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._fail_all()
