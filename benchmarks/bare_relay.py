"""A byte-for-byte relay with no logic at all: the floor any extra process hop costs.

``bench_proxy.py`` measures it beside the proxy, so the proxy's own cost can be told apart
from what one more process between client and server costs on the machine (two more
wake-ups per call, across CPUs on a small VM).

Run: ``python benchmarks/bare_relay.py tcp LISTEN_PORT UPSTREAM_PORT`` or
``python benchmarks/bare_relay.py stdio -- CMD ARGS...``
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def tcp(listen: int, upstream: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


async def stdio(argv: list[str]) -> None:
    loop = asyncio.get_running_loop()
    child = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        sys.stdout)
    stdout = asyncio.StreamWriter(transport, protocol, None, loop)
    await asyncio.gather(_pipe(stdin, child.stdin), _pipe(child.stdout, stdout),
                         return_exceptions=True)
    await child.wait()


if __name__ == "__main__":
    if sys.argv[1] == "tcp":
        asyncio.run(tcp(int(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(stdio(sys.argv[sys.argv.index("--") + 1:]))
