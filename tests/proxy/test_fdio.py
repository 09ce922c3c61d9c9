"""FdReader on a real pipe: chunks read by the readiness callback, intercepted or handed over."""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from agentguard.proxy import fdio
from agentguard.proxy.fdio import FdReader, FdWriter

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], object]) -> None:
    """Let the event loop run until ``condition()`` holds (the readiness callback ran)."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


async def _reading(tg: anyio.abc.TaskGroup, reader: FdReader) -> list[bytes]:
    """Start a task blocked in ``reader.read()``; what it returns lands in the list."""
    got: list[bytes] = []

    async def consume() -> None:
        got.append(await reader.read())

    tg.start_soon(consume)
    await anyio.wait_all_tasks_blocked()
    return got


async def test_chunks_arrive_in_order_and_eof_is_empty() -> None:
    r, w = os.pipe()
    reader = FdReader(r)
    try:
        os.write(w, b"one\n")
        assert await reader.read() == b"one\n"  # already there: read at once
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def consume() -> None:
                while chunk := await reader.read():
                    got.append(chunk)

            tg.start_soon(consume)
            os.write(w, b"two\n")
            await _until(lambda: got)
            os.write(w, b"three\n")
            await _until(lambda: len(got) == 2)
            os.close(w)
            w = -1
        assert got == [b"two\n", b"three\n"]
    finally:
        reader.close()
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_an_intercepted_chunk_never_reaches_the_reader() -> None:
    r, w = os.pipe()
    reader = FdReader(r)
    seen: list[bytes] = []

    def intercept(chunk: bytes) -> bytes:
        seen.append(chunk)
        return b"" if chunk.startswith(b"mine") else chunk

    reader.intercept = intercept
    try:
        async with anyio.create_task_group() as tg:
            got = await _reading(tg, reader)
            os.write(w, b"mine 1\n")
            await _until(lambda: seen)
            os.write(w, b"theirs\n")
        assert seen == [b"mine 1\n", b"theirs\n"]
        assert got == [b"theirs\n"]
    finally:
        reader.close()
        os.close(r)
        os.close(w)


async def test_an_intercept_that_raises_fails_the_read() -> None:
    r, w = os.pipe()
    reader = FdReader(r)

    def intercept(chunk: bytes) -> bytes:
        raise RuntimeError("boom")

    reader.intercept = intercept
    try:
        async with anyio.create_task_group() as tg:
            async def consume() -> None:
                with pytest.raises(RuntimeError, match="boom"):
                    await reader.read()

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            os.write(w, b"x\n")
    finally:
        reader.close()
        os.close(r)
        os.close(w)


async def test_a_regular_file_is_read_with_blocking_calls(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "f")
    with open(path, "wb") as f:
        f.write(b"data\n")
    fd = os.open(path, os.O_RDONLY)
    reader = FdReader(fd)
    try:
        assert await reader.read() == b"data\n"
        assert await reader.read() == b""
    finally:
        reader.close()
        os.close(fd)


async def test_an_intercept_may_take_a_head_and_leave_the_rest() -> None:
    r, w = os.pipe()
    reader = FdReader(r)

    def intercept(chunk: bytes) -> bytes:
        return chunk[chunk.index(b"\n") + 1:] if chunk.startswith(b"mine") else chunk

    reader.intercept = intercept
    try:
        async with anyio.create_task_group() as tg:
            got = await _reading(tg, reader)
            os.write(w, b"mine 1\ntheirs\nmine 2\n")
        assert got == [b"theirs\nmine 2\n"]
    finally:
        reader.close()
        os.close(r)
        os.close(w)


async def test_writes_from_an_intercept_go_out_once_per_writer_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    other_r, other_w = os.pipe()
    writes: list[tuple[int, bytes]] = []
    real_write = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append((fd, bytes(data)))
        return real_write(fd, data)

    monkeypatch.setattr(fdio.os, "write", counting)
    reader = FdReader(r)
    try:
        async with anyio.create_task_group() as tg:
            out, other = FdWriter(out_w, tg.start_soon), FdWriter(other_w, tg.start_soon)

            def intercept(chunk: bytes) -> bytes:
                for line in chunk.splitlines(keepends=True):
                    out.write_nowait(b"out " + line)
                    other.write_nowait(b"other " + line)
                return b""

            reader.intercept = intercept
            await _reading(tg, reader)
            real_write(w, b"1\n2\n3\n")
            await _until(lambda: writes)
            tg.cancel_scope.cancel()
        assert writes == [(out_w, b"out 1\nout 2\nout 3\n"),
                          (other_w, b"other 1\nother 2\nother 3\n")]
        out.write_nowait(b"direct\n")  # outside a callback: at once
        assert writes[-1] == (out_w, b"direct\n")
        assert os.read(out_r, 100) == b"out 1\nout 2\nout 3\ndirect\n"
    finally:
        reader.close()
        for fd in (r, w, out_r, out_w, other_r, other_w):
            os.close(fd)


async def test_a_batch_the_pipe_cannot_take_is_flushed_in_order_when_it_drains() -> None:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    reader = FdReader(r)
    lines = [b"%05d " % i + b"x" * 1000 + b"\n" for i in range(300)]  # ~300 KiB
    try:
        async with anyio.create_task_group() as tg:
            out = FdWriter(out_w, tg.start_soon)

            def intercept(chunk: bytes) -> bytes:
                for line in lines[:150]:
                    out.write_nowait(line)
                return b""

            reader.intercept = intercept
            await _reading(tg, reader)
            os.write(w, b"go\n")
            await _until(lambda: out._buffer)  # the pipe took what it could
            for line in lines[150:]:
                out.write_nowait(line)  # queued behind the rest, not before it
            got = bytearray()
            while len(got) < sum(map(len, lines)):
                await anyio.wait_readable(out_r)
                got += os.read(out_r, 1 << 20)
            await out.drain()
            tg.cancel_scope.cancel()
        assert bytes(got) == b"".join(lines)
    finally:
        reader.close()
        for fd in (r, w, out_r, out_w):
            os.close(fd)


async def test_a_failed_batched_write_calls_on_close() -> None:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(out_r)  # nobody reads: EPIPE
    closed: list[bool] = []
    reader = FdReader(r)
    try:
        async with anyio.create_task_group() as tg:
            out = FdWriter(out_w, tg.start_soon, lambda: closed.append(True))

            def intercept(chunk: bytes) -> bytes:
                out.write_nowait(b"lost\n")
                assert not closed  # written when the callback ends
                return b""

            reader.intercept = intercept
            await _reading(tg, reader)
            os.write(w, b"go\n")
            await _until(lambda: closed)
            tg.cancel_scope.cancel()
        assert out.closed and closed == [True]
    finally:
        reader.close()
        for fd in (r, w, out_w):
            os.close(fd)


async def test_a_writer_that_fails_badly_in_a_batch_keeps_neither_the_others_nor_the_reader(
        ) -> None:
    r, w = os.pipe()
    dead_r, dead_w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(dead_r)

    def explode() -> None:
        raise RuntimeError("on_close failed")

    reader = FdReader(r)
    try:
        async with anyio.create_task_group() as tg:
            dead = FdWriter(dead_w, tg.start_soon, explode)
            out = FdWriter(out_w, tg.start_soon)

            def intercept(chunk: bytes) -> bytes:
                dead.write_nowait(b"lost\n")
                out.write_nowait(b"kept\n")
                return b""

            reader.intercept = intercept
            async with anyio.create_task_group() as inner:
                async def consume() -> None:
                    with pytest.raises(RuntimeError, match="on_close failed"):
                        await reader.read()

                inner.start_soon(consume)
                await anyio.wait_all_tasks_blocked()
                os.write(w, b"go\n")
            assert os.read(out_r, 100) == b"kept\n"
            out.write_nowait(b"again\n")
            assert os.read(out_r, 100) == b"again\n"
    finally:
        reader.close()
        for fd in (r, w, dead_w, out_r, out_w):
            os.close(fd)
