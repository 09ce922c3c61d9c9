"""Anthropic: step-up authentication for ``tool_use`` blocks from the Messages API.

A dispatcher answers a message's ``tool_use`` blocks with ``tool_result`` blocks: allowed
calls run, refused ones get ``is_error: true`` and a one-line reason the model can read::

    from anthropic import AsyncAnthropic
    from agentguard.adapters.anthropic import ToolDispatcher

    tools = ToolDispatcher([get_weather, delete_file], guard=guard,
                           run=RunContext(principal="agent:helper", session_id="s1"))
    client = AsyncAnthropic()
    message = await client.messages.create(model="claude-sonnet-5-5", max_tokens=1024,
                                           messages=messages, tools=tools.tools())
    messages += [{"role": "assistant", "content": message.content},
                 await tools.reply(message)]                  # {"role": "user", ...}

The SDK's tool runner calls tools itself, so guarding it means guarding the tools (appending
your own ``tool_result`` would not stop the runner from running the tool)::

    from anthropic import beta_tool
    from agentguard.adapters.anthropic import guard_beta_tools

    runner = client.beta.messages.tool_runner(
        model="claude-sonnet-5-5", max_tokens=1024, messages=messages,
        tools=guard_beta_tools([beta_tool(delete_file)], guard=guard))
    for message in runner: ...

A turn's held calls can outlive the process: with ``wait=0`` the turn ends at once with
held calls marked pending; keep the conversation and the outcomes, and answer the same
message later, in any process (settled calls are not run again)::

    outcomes = await tools.outcomes(message, wait=0)
    if any(o.pending for o in outcomes):
        save(messages, [o.to_dict() for o in outcomes])          # and exit; later:
    outcomes = await tools.outcomes(message, wait=0,
                                    settled=[ToolOutcome.from_dict(d) for d in saved])
    messages.append(tools.reply_from(outcomes))

A refused tool raises the SDK's ``ToolError`` before the function runs, so the runner sends
``is_error: true`` with the reason. The dispatcher needs no Anthropic package; the tool-runner
functions need ``pip install 'agentguard[anthropic]'``. (A ``can_use_tool`` callback for the
Claude Agent SDK is not provided: that SDK is not a dependency of agentguard.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import RunContext
from agentguard.adapters._dispatch import Dispatcher, ToolOutcome, field_of

if TYPE_CHECKING:
    from agentguard.adapters._anthropic_tools import (
        guard_beta_tool,
        guard_beta_tools,
    )

__all__ = ["RunContext", "ToolDispatcher", "ToolOutcome", "guard_beta_tool", "guard_beta_tools"]

_RUNNER_API = frozenset({"guard_beta_tool", "guard_beta_tools"})


def __getattr__(name: str) -> Any:
    # The anthropic package is optional: load the tool-runner integration on first use.
    if name in _RUNNER_API:
        from agentguard.adapters import _anthropic_tools

        return getattr(_anthropic_tools, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



class ToolDispatcher(Dispatcher):
    """Runs a message's ``tool_use`` blocks through the guard.

    Constructor arguments: see :class:`~agentguard.adapters._dispatch.Dispatcher`.
    """

    origin = "anthropic"

    def tools(self) -> list[dict[str, Any]]:
        """Tool definitions for ``messages.create(tools=...)``."""
        return [{"name": s.name, "description": s.description, "input_schema": s.parameters}
                for s in self.functions.values()]

    @staticmethod
    def _uses(message_or_blocks: Any) -> list[tuple[str, str, Any]]:
        blocks = message_or_blocks
        if not isinstance(blocks, list | tuple):
            blocks = field_of(blocks, "content") or []
        return [(field_of(b, "id") or "", field_of(b, "name") or "", field_of(b, "input"))
                for b in blocks if field_of(b, "type") == "tool_use"]

    @staticmethod
    def _result(outcome: ToolOutcome) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": outcome.call_id,
                                 "content": outcome.output}
        if outcome.is_error:
            block["is_error"] = True
        return block

    async def outcomes(
        self, message_or_blocks: Any, *, run: RunContext | Mapping[str, Any] | None = None,
        wait: float | None = None, settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Authorize and run each ``tool_use`` block, in order.

        Args:
            message_or_blocks: The ``Message`` or its ``content`` (objects or dicts).
            run: Facts about the caller for these calls (override the dispatcher's).
            wait: Seconds to wait for a human's verdict on a held call (``None``: until
                the request expires). With ``0`` the turn ends at once with held calls
                marked pending (``outcome.pending``, ``outcome.request_id``).
            settled: Outcomes kept from an earlier pass over the same message (see
                :meth:`Dispatcher.turn`): settled calls are not run again, pending ones are
                answered from the store.
        """
        return await self.turn(self._uses(message_or_blocks), run=run, wait=wait,
                               settled=settled)

    def outcomes_sync(
        self, message_or_blocks: Any, *, run: RunContext | Mapping[str, Any] | None = None,
        wait: float | None = None, settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Synchronous :meth:`outcomes` (a usage error inside a running event loop)."""
        return self.turn_sync(self._uses(message_or_blocks), run=run, wait=wait,
                              settled=settled)

    @classmethod
    def reply_from(cls, outcomes: Iterable[ToolOutcome]) -> dict[str, Any]:
        """The user message carrying one ``tool_result`` block per outcome. A pending
        outcome says the call waits for approval (``is_error``); send it only if the model
        should go on without that result, else wait until no outcome is pending."""
        return {"role": "user", "content": [cls._result(o) for o in outcomes]}

    async def results(
        self, message_or_blocks: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the ``tool_use`` blocks of a message (or of a content list; other blocks are
        skipped) and return one ``tool_result`` block per call.

        Args:
            message_or_blocks: The ``Message`` or its ``content`` (objects or dicts).
            run: Facts about the caller for these calls (override the dispatcher's).
        """
        return [self._result(o) for o in await self.outcomes(message_or_blocks, run=run)]

    def results_sync(
        self, message_or_blocks: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Synchronous :meth:`results` (a usage error inside a running event loop)."""
        return [self._result(o) for o in self.outcomes_sync(message_or_blocks, run=run)]

    async def reply(
        self, message: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The user message answering ``message``'s tool calls."""
        return {"role": "user", "content": await self.results(message, run=run)}

    def reply_sync(
        self, message: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Synchronous :meth:`reply`."""
        return {"role": "user", "content": self.results_sync(message, run=run)}
