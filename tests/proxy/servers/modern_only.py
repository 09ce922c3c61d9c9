"""A 2026-07-28-only upstream: a stdio server (its command line follows) behind a filter that
refuses the ``initialize`` handshake with -32022, as a server without the handshake era does.
Run over stdio::

    python tests/proxy/servers/modern_only.py python examples/servers/ops_server.py ...
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading


def main() -> None:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    out = sys.stdout.buffer
    lock = threading.Lock()

    def write(line: bytes) -> None:
        with lock:
            out.write(line)
            out.flush()

    def answers() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            write(line)

    threading.Thread(target=answers, daemon=True).start()
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if message.get("method") == "initialize":
            write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": ["2026-07-28"]}}}).encode() + b"\n")
            continue
        child.stdin.write(line)
        child.stdin.flush()
    child.stdin.close()
    child.wait()


if __name__ == "__main__":
    main()
