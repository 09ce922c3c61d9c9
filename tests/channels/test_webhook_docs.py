"""The README's webhook bodies are the ones the channel sends: same fields, same nesting."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.channels.test_webhook import Receiver, call, held, post, signed_decision, webhook_setup

pytestmark = pytest.mark.anyio
README = Path(__file__).resolve().parents[2] / "README.md"


def _documented(marker: str) -> dict[str, Any]:
    text = README.read_text()
    found = re.search(rf"<!-- {marker} -->\n```json\n(.*?)\n```", text, re.S)
    assert found, marker
    return json.loads(found.group(1))


def _shape(value: Any) -> Any:
    return {k: _shape(v) for k, v in value.items()} if isinstance(value, dict) else None


async def test_documented_bodies_match_what_is_sent() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver) as env:
        async def decide(delivery: dict[str, Any]) -> Any:
            body, headers = signed_decision({"request_id": delivery["request"]["id"],
                                             "approver": "ops:alice", "decision": "approve"})
            return await post(env["callback"], body, headers)

        await held(env, receiver, call("restart", svc="api"), decide)
        request, settled = await receiver.wait(2)
    # "args" is the call's own mapping; only its presence is documented.
    request["request"]["args"] = None
    documented = _documented("webhook-request")
    documented["request"]["args"] = None
    assert _shape(request) == _shape(documented)
    assert _shape(settled) == _shape(_documented("webhook-settled"))
