"""Run by tests/store/test_sqlite.py in a separate OS process (not a test module).

Usage:
    sqlite_child.py race DB GO_FILE approve|deny ID,ID,...
        open the store, create GO_FILE.ready-approve|deny, wait for GO_FILE, vote on each id
    sqlite_child.py vote DB ID
        approve one request
Prints a JSON object {id: status after the vote, or "conflict"}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio

from agentguard.errors import ConflictError
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalVote


async def wait_for(path: Path) -> None:
    with anyio.fail_after(30):
        while not path.exists():
            await anyio.sleep(0.001)


async def vote_all(
    db: str, ids: list[str], approve: bool, go: Path | None = None, ready: Path | None = None
) -> dict[str, str]:
    results: dict[str, str] = {}
    async with SQLiteStore(db) as store:
        if ready is not None and go is not None:
            ready.touch()
            await wait_for(go)
        for request_id in ids:
            ballot = ApprovalVote(
                approver=f"pid{os.getpid()}", approve=approve, at=time.time(), channel="test"
            )
            try:
                results[request_id] = (await store.record_vote(request_id, ballot)).request.status
            except ConflictError:
                results[request_id] = "conflict"
    return results


def main(argv: list[str]) -> None:
    if argv[0] == "race":
        db, go, choice, ids = argv[1:]
        results = anyio.run(
            vote_all, db, ids.split(","), choice == "approve", Path(go),
            Path(f"{go}.ready-{choice}"),
        )
    elif argv[0] == "vote":
        results = anyio.run(vote_all, argv[1], [argv[2]], True)
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
