"""A 2026-07-28 upstream without ``subscriptions/listen``: a client's subscribe through the
proxy is answered at once, not after waiting for an acknowledgement nothing would send."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning

from tests.proxy.conftest import PYTHON, ROOT, ProxyUnderTest

EVERYTHING = str(ROOT / "tests" / "conformance" / "everything_server.py")
URI = "test://watched-resource"


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_subscribing_through_an_upstream_without_a_listen_stream_does_not_hang(
        proxy: ProxyUnderTest) -> None:
    async with proxy.client(proxy.params(PYTHON, EVERYTHING, name="everything"),
                            "legacy") as client:
        listed = await client.list_resources()
        assert URI in {str(r.uri) for r in listed.resources}
        # The proxy used to wait its 10 s acknowledgement window on each change of the set.
        with anyio.fail_after(8), pytest.warns(MCPDeprecationWarning):
            await client.session.subscribe_resource(URI)
            await client.session.unsubscribe_resource(URI)
