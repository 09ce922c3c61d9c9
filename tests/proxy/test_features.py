"""Everything besides tools a faithful proxy carries: requests from the upstream to the
client (elicitation, sampling, roots), progress, resources, prompts and completions."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ElicitResult, PromptReference

from tests.proxy.conftest import MODES, Elicitations, ProxyUnderTest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("upstream", ["auto", "legacy"])
async def test_requests_from_the_upstream_reach_the_client(proxy: ProxyUnderTest, mode: str,
                                                           upstream: str) -> None:
    """Pushed by an old-era upstream or asked in rounds by a 2026 one; pushed to an old-era
    client or asked in rounds of a 2026 one: all four combinations."""
    from mcp.types import CreateMessageResult, ListRootsResult, Root, TextContent

    answers = Elicitations([ElicitResult(action="accept", content={"confirm": True,
                                                                   "minutes": 45})])

    async def sample(ctx: Any, params: Any) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", model="test",
                                   content=TextContent(type="text", text="all calm"))

    async def roots(ctx: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///srv/ops", name="ops")])

    async with proxy.client(proxy.ops(("--upstream-mode", upstream)), mode,
                            elicitation_callback=answers, sampling_callback=sample,
                            list_roots_callback=roots) as client:
        result = await client.call_tool("schedule_maintenance", {"service": "search"})
        assert result.content[0].text == "maintenance for search scheduled for 45 minutes"
        assert answers.messages == ["Schedule maintenance for search?"]
        result = await client.call_tool("summarize_incident", {"text": "db down"})
        assert result.content[0].text == "summary: all calm"
        result = await client.call_tool("show_roots", {})
        assert result.structured_content == {"result": ["file:///srv/ops"]}


@pytest.mark.parametrize("mode", MODES)
async def test_progress_resources_prompts_and_completions(proxy: ProxyUnderTest,
                                                          mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async with proxy.client(proxy.ops(), mode) as client:
        result = await client.call_tool("count_to", {"n": 3}, progress_callback=progress)
        assert result.content[0].text == "counted to 3"
        assert [s[0] for s in seen] == [1.0, 2.0, 3.0] and seen[-1][2] == "step 3"
        listed = await client.list_resources()
        assert [str(r.uri) for r in listed.resources] == ["ops://services"]
        templates = await client.list_resource_templates()
        assert templates.resource_templates[0].uri_template == "ops://services/{name}/status"
        read = await client.read_resource("ops://services/api/status")
        assert read.contents[0].text.startswith("api: running")
        prompts = await client.list_prompts()
        assert [p.name for p in prompts.prompts] == ["incident_report"]
        prompt = await client.get_prompt("incident_report", {"service": "api",
                                                             "severity": "sev1"})
        assert prompt.messages[0].content.text == "Write a sev1 incident report for api."
        done = await client.complete(PromptReference(type="ref/prompt", name="incident_report"),
                                     {"name": "service", "value": "b"})
        assert done.completion.values == ["billing"]


@pytest.mark.parametrize("mode", MODES)
async def test_resource_subscriptions_deliver_updates(proxy: ProxyUnderTest, mode: str) -> None:
    uri = "ops://services/search/status"
    updated = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if type(root).__name__ == "ResourceUpdatedNotification" and str(root.params.uri) == uri:
            updated.set()

    answers = Elicitations(default=ElicitResult(action="accept", content={"approve": True}))
    async with proxy.client(proxy.ops(), mode, message_handler=on_message,
                            elicitation_callback=answers) as client:
        if mode == "legacy":
            with pytest.warns(MCPDeprecationWarning):  # old era only; it is what we test
                await client.session.subscribe_resource(uri)
            await client.call_tool("restart_service", {"service": "search"})
            with anyio.fail_after(20):
                await updated.wait()
        else:
            async with client.listen(resource_subscriptions=[uri]) as sub:
                await client.call_tool("restart_service", {"service": "search"})
                with anyio.fail_after(20):
                    event = await sub.__anext__()
            assert type(event).__name__ == "ResourceUpdated" and event.uri == uri
