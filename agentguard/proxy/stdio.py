"""The hardened stdio transport of the proxy's downstream side.

Every line is checked by :mod:`agentguard.proxy.wire` and a bad one is answered right here;
the rest go to the MCP server (or to the relay's interceptor first). Like the SDK's
transport it keeps stray ``print`` output off the wire: while serving, fd 0 reads
``/dev/null`` and fd 1 goes to stderr; the protocol uses private duplicates. The descriptors
are polled by the event loop (no thread per message) when they can be.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, JSONRPCError

from agentguard.proxy.fdio import FdReader, FdWriter
from agentguard.proxy.wire import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    WireError,
    parse_value,
    serialize,
    to_message,
)

__all__ = ["Interceptor", "stdio_transport"]

logger = logging.getLogger(__name__)


class Interceptor(Protocol):
    """Sees downstream traffic first (see :class:`agentguard.proxy.stdio_relay.StdioRelay`)."""

    def offer(self, value: dict[str, Any], reply: Any, spawn: Any, fallback: Any) -> bool:
        """Take the decoded message (True) or leave it to the server (False).

        ``reply(bytes)`` writes a line at once (no await); ``spawn`` starts a task;
        ``fallback(value)`` (async) hands the message to the server after all.
        """

    def outgoing(self, message: SessionMessage) -> None:
        """Observe a message the server sends."""


@contextlib.contextmanager
def _claim_stdio() -> Any:
    """Serve the protocol on private copies of fd 0/1; point fd 0 at /dev/null, fd 1 at fd 2."""
    sys.stdout.flush()
    wire_in = os.dup(0)
    wire_out = os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield wire_in, wire_out
    finally:
        sys.stdout.flush()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        for fd in (saved_in, saved_out, wire_in, wire_out):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.asynccontextmanager
async def stdio_transport(
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    fds: tuple[int, int] | None = None,
    interceptor: Interceptor | None = None,
    first: Callable[[dict[str, Any] | None], Awaitable[None]] | None = None,
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                         MemoryObjectSendStream[SessionMessage]]]:
    """Yield ``(read_stream, write_stream)`` for ``Server.run`` over hardened stdio.

    Args:
        max_message_bytes: Longest accepted line; longer ones are skipped and answered.
        max_depth: Deepest accepted JSON nesting.
        fds: Explicit (read, write) descriptors instead of claiming the process's stdio.
        interceptor: Sees every message first and may answer it itself (the relay).
        first: Awaited with the first well-formed message (None: the input ended before
            one) before that message goes anywhere; reading waits meanwhile.
    """
    claim = contextlib.nullcontext(fds) if fds is not None else _claim_stdio()
    with claim as (fd_in, fd_out):
        reader = FdReader(fd_in)
        writer: FdWriter | None = None
        in_send, in_recv = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        out_send, out_recv = anyio.create_memory_object_stream[SessionMessage | bytes](16)
        errors = out_send.clone()
        pending = [first] if first is not None else []

        async def answer(exc: WireError) -> None:
            logger.warning("refused a bad message: %s", exc)
            msg = JSONRPCError(jsonrpc="2.0", id=exc.request_id, error=exc.error)
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await errors.send(SessionMessage(msg))

        def reply(line: bytes) -> None:
            assert writer is not None
            writer.write_nowait(line)

        async def to_server(value: dict[str, Any]) -> None:
            try:
                message = to_message(value)
            except WireError as exc:
                await answer(exc)
                return
            await in_send.send(message)

        async def handle(line: bytes) -> None:
            try:
                value = parse_value(line, max_depth=max_depth)
            except WireError as exc:
                await answer(exc)
                return
            if value is None:
                return
            if pending:
                await pending.pop()(value)
            if interceptor is not None and interceptor.offer(value, reply, tg.start_soon,
                                                              to_server):
                return
            await to_server(value)

        async def read_loop() -> None:
            try:
                await read_lines()
            finally:
                reader.close()
            if pending:
                await pending.pop()(None)
            await errors.aclose()

        async def read_lines() -> None:
            buf = bytearray()
            skipping = False
            handed: list[tuple[bytes, dict[str, Any]]] = []

            def intercept(chunk: bytes) -> bytes:
                # In the reader's readiness callback, with every earlier line dealt with:
                # whole lines the relay takes are served here, as many as the chunk holds in
                # a row, without waking this task (and what they write goes out together when
                # the callback ends). From the first line it leaves (a bad line, a part, one
                # the server must see), the rest is the loop's below, in order.
                assert interceptor is not None
                if buf or skipping or pending:
                    return chunk
                start = 0
                while (nl := chunk.find(b"\n", start)) >= 0 and nl - start <= max_message_bytes:
                    try:
                        value = parse_value(chunk[start:nl], max_depth=max_depth)
                    except WireError:
                        break  # the loop parses it again and answers
                    if value is not None and not interceptor.offer(value, reply, tg.start_soon,
                                                                    to_server):
                        rest = chunk[start:] if start else chunk
                        handed.append((rest, value))  # offered already: straight to the server
                        return rest
                    start = nl + 1
                return chunk[start:] if start else chunk

            if interceptor is not None:
                reader.intercept = intercept
            async with in_send:
                while True:
                    try:
                        chunk = await reader.read()
                    except OSError as exc:
                        logger.warning("stdin read failed: %s", exc)
                        break
                    if not chunk:
                        break
                    start = 0
                    if handed:
                        seen, value = handed.pop()
                        if seen is chunk:  # its first line, whole, the relay left
                            await to_server(value)
                            start = chunk.find(b"\n") + 1
                    while start < len(chunk):
                        nl = chunk.find(b"\n", start)
                        part = chunk[start:] if nl < 0 else chunk[start:nl]
                        if not skipping and len(buf) + len(part) > max_message_bytes:
                            skipping = True
                            buf.clear()
                        if not skipping:
                            buf += part
                        if nl < 0:
                            break
                        start = nl + 1
                        if skipping:
                            skipping = False
                            await answer(WireError(
                                INVALID_REQUEST,
                                f"Invalid Request: message larger than {max_message_bytes} bytes",
                            ))
                        else:
                            line = bytes(buf)
                            buf.clear()
                            await handle(line)
                if buf and not skipping:
                    await handle(bytes(buf))

        written = anyio.Event()

        async def write_loop() -> None:
            try:
                async with out_recv:
                    async for message in out_recv:
                        if isinstance(message, bytes):
                            data = message
                        else:
                            if interceptor is not None:
                                interceptor.outgoing(message)
                            data = serialize(message)
                        assert writer is not None
                        await writer.write(data)
                        if writer.closed:  # the client went away
                            return
            finally:
                written.set()

        async with anyio.create_task_group() as tg:
            writer = FdWriter(fd_out, tg.start_soon)
            tg.start_soon(read_loop)
            tg.start_soon(write_loop)
            try:
                yield in_recv, out_send
            finally:
                # Flush what the server already answered before tearing the loops down.
                await out_send.aclose()
                await errors.aclose()
                with anyio.move_on_after(2, shield=True):
                    await written.wait()
                    await writer.drain()
                tg.cancel_scope.cancel()


