"""An HTTP listener in front of a stdio upstream, with calls in flight on many connections.

Requests relayed from several sockets' callbacks share the stdio lane: every call gets its
own answer, under its own id.
"""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest

from tests.proxy.conftest import ProxyUnderTest
from tests.proxy.test_http_relay import _call, _headers, in_process_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_calls_in_flight_on_many_connections_each_get_their_own_answer(
        proxy: ProxyUnderTest) -> None:
    async with in_process_proxy(proxy, 30.0) as (url, core), \
            httpx2.AsyncClient(timeout=30) as http:
        assert core.upstreams["ops"].lane.carries_headers is False  # the stdio lane

        async def call(n: int) -> None:
            for _ in range(5):
                service = f"svc-{n}"
                body = _call(rid=n, arguments={"service": service})
                response = await http.post(url, headers=_headers(), content=body)
                answer = json.loads(response.content)
                assert answer["id"] == n  # (its own service is named in the upstream's error)
                assert answer["error"]["message"] == f"unknown service {service!r}"

        async with anyio.create_task_group() as tg:
            for n in range(1, 17):
                tg.start_soon(call, n)
