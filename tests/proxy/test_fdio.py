"""FdReader on a real pipe: chunks read by the readiness callback, intercepted or handed over."""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import pytest

from agentguard.proxy.fdio import FdReader

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], object]) -> None:
    """Let the event loop run until ``condition()`` holds (the readiness callback ran)."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


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

    def intercept(chunk: bytes) -> bool:
        seen.append(chunk)
        return chunk.startswith(b"mine")

    reader.intercept = intercept
    try:
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def consume() -> None:
                got.append(await reader.read())

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
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

    def intercept(chunk: bytes) -> bool:
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
