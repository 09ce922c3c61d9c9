"""A stdio shim between the proxy and a real upstream that delivers its output in batches.

``python coalesce.py [--crash-marker FILE] -- CMD ARGS...`` starts ``CMD`` and passes stdin
through untouched; what the upstream writes is held until ``--wait`` seconds pass with at
least one whole line, then written in one ``write``: several answers reach the proxy in one
read. With ``--crash-marker`` (and the file absent), once 4 tool results are held, the shim
writes the first two and half of the third in one write, creates the file, kills the
upstream and exits: the upstream crashes mid-batch, in the middle of a line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    marker = opts[opts.index("--crash-marker") + 1] if "--crash-marker" in opts else None
    wait = float(opts[opts.index("--wait") + 1]) if "--wait" in opts else 0.05
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    held = bytearray()
    lock = threading.Lock()

    def pump_in() -> None:
        while data := os.read(0, 65536):
            child.stdin.write(data)  # type: ignore[union-attr]
        child.stdin.close()  # type: ignore[union-attr]

    def pump_out() -> None:
        while data := os.read(child.stdout.fileno(), 65536):  # type: ignore[union-attr]
            with lock:
                held.extend(data)

    threading.Thread(target=pump_in, daemon=True).start()
    reader = threading.Thread(target=pump_out, daemon=True)
    reader.start()
    while reader.is_alive() or held:
        time.sleep(wait)
        with lock:
            end = held.rfind(b"\n") + 1
            batch = bytes(held[:end])
            if marker is not None and not os.path.exists(marker) and \
                    batch.count(b'"content"') >= 4:
                lines = batch.split(b"\n")
                results = [i for i, line in enumerate(lines) if b'"content"' in line]
                third = lines[results[2]]
                cut = b"\n".join(lines[:results[2]]) + b"\n" + third[:len(third) // 2]
                os.write(1, cut)
                open(marker, "w").close()
                child.send_signal(signal.SIGKILL)
                os._exit(0)
            del held[:end]
        if batch:
            os.write(1, batch)
    child.wait()


if __name__ == "__main__":
    main()
