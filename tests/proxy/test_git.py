"""A third-party server installed with pip: ``mcp-server-git`` on a temporary repository."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import StdioServerParameters

from tests.proxy.conftest import GIT_SERVER, MODES, ProxyUnderTest, git_log

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def _git(proxy: ProxyUnderTest, repo: Path) -> StdioServerParameters:
    return proxy.params(GIT_SERVER, "--repository", str(repo), name="git")


@pytest.mark.parametrize("mode", MODES)
async def test_git_status_passes_and_git_commit_is_held(proxy: ProxyUnderTest, git_repo: Path,
                                                        mode: str) -> None:
    approve = mode == "auto"  # deny on one era, approve on the other
    outcome: dict = {}
    async with proxy.client(_git(proxy, git_repo), mode) as client:
        status = await client.call_tool("git_status", {"repo_path": str(git_repo)})
        assert not status.is_error and "README.md" in status.content[0].text

        async def commit() -> None:
            outcome["r"] = await client.call_tool(
                "git_commit", {"repo_path": str(git_repo), "message": "second"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(commit)
            request = await proxy.decide(approve, approver="bob")
    assert request.call["server"] == "git" and request.rule_id == "git-writes"
    if approve:
        assert not outcome["r"].is_error
        assert git_log(git_repo) == ["second", "first"]
    else:
        assert outcome["r"].is_error and "denied by bob" in outcome["r"].content[0].text
        assert git_log(git_repo) == ["first"]


@pytest.mark.parametrize("mode", MODES)
async def test_git_reset_is_held_and_a_denial_leaves_the_index_alone(
        proxy: ProxyUnderTest, git_repo: Path, mode: str) -> None:
    outcome: dict = {}
    async with proxy.client(_git(proxy, git_repo), mode) as client:
        async def reset() -> None:
            outcome["r"] = await client.call_tool("git_reset", {"repo_path": str(git_repo)})

        async with anyio.create_task_group() as tg:
            tg.start_soon(reset)
            request = await proxy.decide(False, approver="alice")
        staged = await client.call_tool("git_diff_staged", {"repo_path": str(git_repo)})
    assert request.privilege == "destructive"
    assert outcome["r"].is_error and "git-reset" in outcome["r"].content[0].text
    assert "hello again" in staged.content[0].text  # the staged change is still there
