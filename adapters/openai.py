"""OpenAI: step-up authentication for tool calls from Chat Completions, the Responses API and
the Agents SDK (``openai-agents``).

Chat Completions and Responses — a dispatcher runs the allowed calls and answers the rest
with a refusal the model can read::

    from openai import AsyncOpenAI
    from agentguard.adapters.openai import ToolDispatcher

    tools = ToolDispatcher([get_weather, delete_file], guard=guard,
                           run=RunContext(principal="agent:helper", session_id="s1"))
    client = AsyncOpenAI()
    messages = [{"role": "user", "content": "Delete /tmp/x"}]
    reply = await client.chat.completions.create(model="gpt-5", messages=messages,
                                                 tools=tools.chat_tools())
    message = reply.choices[0].message
    messages += [message.model_dump(exclude_none=True), *await tools.chat(message)]

    resp = await client.responses.create(model="gpt-5", input=items,
                                         tools=tools.responses_tools())
    items += [*resp.output, *await tools.responses(resp)]      # function_call_output items

Agents SDK — guard function tools (a held call waits for approval inside the tool call, the
event loop stays free), and answer the SDK's approval interruptions (tools declared with
``needs_approval``, MCP servers with ``require_approval``) through the guard's channels::

    from agents import Agent, function_tool
    from agentguard.adapters.openai import guard_function_tools, run_guarded

    agent = Agent(name="ops", tools=guard_function_tools([function_tool(delete_file)],
                                                         guard=guard))
    result = await run_guarded(agent, "delete /tmp/x", guard=guard,
                               context=RunContext(principal="agent:ops"))

Holds that outlive the process: Agents SDK tools guarded with ``hold="interrupt"`` turn a
held call into one of the run's approval interruptions; ``run_durable`` returns the run with
its held calls, ``DurableRun.state()`` is the text to keep, and ``resume_durable`` (in any
process, after ``agentguard approvals approve|deny``) applies the verdicts and resumes. The
dispatchers take ``wait=0`` and ``settled=`` (see :meth:`Dispatcher.turn`).

A refused call never runs; the model gets one line saying what happened, which rule decided,
and that retrying will not help. The dispatcher needs no OpenAI package; the Agents SDK
functions need ``pip install 'agentguard[openai]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import RunContext
from agentguard.adapters._dispatch import Dispatcher, ToolOutcome, field_of

if TYPE_CHECKING:
    from agentguard.adapters._openai_agents import guard_function_tool, guard_function_tools
    from agentguard.adapters._openai_agents_runs import (
        DurableRun,
        PendingCall,
        answer_interruptions,
        resolve_interruptions,
        resume_durable,
        run_durable,
        run_guarded,
    )

__all__ = [
    "DurableRun",
    "PendingCall",
    "RunContext",
    "ToolDispatcher",
    "ToolOutcome",
    "answer_interruptions",
    "guard_function_tool",
    "guard_function_tools",
    "resolve_interruptions",
    "resume_durable",
    "run_durable",
    "run_guarded",
]

_AGENTS_API = frozenset({"guard_function_tool", "guard_function_tools"})
_RUNS_API = frozenset({"DurableRun", "PendingCall", "answer_interruptions",
                       "resolve_interruptions", "resume_durable", "run_durable", "run_guarded"})


def __getattr__(name: str) -> Any:
    # The Agents SDK is optional and heavy: load it only when its integration is used.
    if name in _AGENTS_API:
        from agentguard.adapters import _openai_agents

        return getattr(_openai_agents, name)
    if name in _RUNS_API:
        from agentguard.adapters import _openai_agents_runs

        return getattr(_openai_agents_runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



class ToolDispatcher(Dispatcher):
    """Runs a model's function calls through the guard (Chat Completions and Responses).

    Constructor arguments: see :class:`~agentguard.adapters._dispatch.Dispatcher`.
    """

    origin = "openai"

    # ------------------------------------------------------------------ definitions
    def chat_tools(self) -> list[dict[str, Any]]:
        """Tool definitions for ``chat.completions.create(tools=...)``."""
        return [{"type": "function", "function": {"name": s.name, "description": s.description,
                                                  "parameters": s.parameters}}
                for s in self.functions.values()]

    def responses_tools(self) -> list[dict[str, Any]]:
        """Tool definitions for ``responses.create(tools=...)``."""
        return [{"type": "function", "name": s.name, "description": s.description,
                 "parameters": s.parameters, "strict": False}
                for s in self.functions.values()]

    # ------------------------------------------------------------------ chat completions
    @staticmethod
    def _chat_calls(calls: Any) -> list[tuple[str, str, Any, str | None]]:
        if not isinstance(calls, list | tuple):
            calls = field_of(calls, "tool_calls") or []
        out = []
        for call in calls:
            kind = field_of(call, "type") or "function"
            fn = field_of(call, "function") if kind == "function" else field_of(call, kind)
            out.append((field_of(call, "id") or "", field_of(fn, "name") or "",
                        field_of(fn, "arguments"), None if kind == "function" else kind))
        return out

    @staticmethod
    def _chat_message(outcome: ToolOutcome) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": outcome.call_id, "content": outcome.output}

    @staticmethod
    def _unsupported(call_id: str, name: str, kind: str) -> ToolOutcome:
        return ToolOutcome(call_id, name, f"error: {kind} tool calls are not supported here; "
                           "nothing ran", True, False)

    async def chat_outcomes(
        self, message_or_calls: Any, *, run: RunContext | Mapping[str, Any] | None = None,
        wait: float | None = None, settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Authorize and run the tool calls of a Chat Completions message, in order.

        ``wait`` and ``settled`` make a turn whose held calls outlive the process: see
        :meth:`Dispatcher.turn` (``wait=0`` ends the turn with held calls pending; call
        again later with ``settled=`` the kept outcomes). :meth:`chat_messages` renders
        the outcomes."""
        calls = self._chat_calls(message_or_calls)
        done = iter(await self.turn([(i, n, a) for i, n, a, u in calls if not u], run=run,
                                    wait=wait, settled=settled))
        return [self._unsupported(i, n, u) if u else next(done) for i, n, _, u in calls]

    @classmethod
    def chat_messages(cls, outcomes: Iterable[ToolOutcome]) -> list[dict[str, Any]]:
        """The ``{"role": "tool", ...}`` messages for ``outcomes``."""
        return [cls._chat_message(o) for o in outcomes]

    async def chat(
        self, message_or_calls: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the tool calls of an assistant message (or a list of its ``tool_calls``, as
        objects or dicts) and return the ``{"role": "tool", ...}`` messages to send back.

        Args:
            message_or_calls: ``completion.choices[0].message`` or its ``tool_calls``.
            run: Facts about the caller for these calls (override the dispatcher's).
        """
        return [self._chat_message(o) for o in await self.chat_outcomes(message_or_calls,
                                                                          run=run)]

    def chat_sync(
        self, message_or_calls: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Synchronous :meth:`chat` (a usage error inside a running event loop)."""
        calls = self._chat_calls(message_or_calls)
        done = iter(self.turn_sync([(i, n, a) for i, n, a, u in calls if not u], run=run))
        return self.chat_messages(self._unsupported(i, n, u) if u else next(done)
                                  for i, n, _, u in calls)

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _function_calls(response_or_items: Any) -> list[tuple[str, str, Any]]:
        items = response_or_items
        if not isinstance(items, list | tuple):
            items = field_of(items, "output") or []
        return [(field_of(i, "call_id") or "", field_of(i, "name") or "", field_of(i, "arguments"))
                for i in items if field_of(i, "type") == "function_call"]

    @staticmethod
    def _output_item(outcome: ToolOutcome) -> dict[str, Any]:
        return {"type": "function_call_output", "call_id": outcome.call_id,
                "output": outcome.output}

    async def responses_outcomes(
        self, response_or_items: Any, *, run: RunContext | Mapping[str, Any] | None = None,
        wait: float | None = None, settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Authorize and run the ``function_call`` items of a Responses API output
        (``wait``, ``settled``: see :meth:`chat_outcomes`)."""
        return await self.turn(self._function_calls(response_or_items), run=run, wait=wait,
                               settled=settled)

    @classmethod
    def output_items(cls, outcomes: Iterable[ToolOutcome]) -> list[dict[str, Any]]:
        """The ``function_call_output`` items for ``outcomes``."""
        return [cls._output_item(o) for o in outcomes]

    async def responses(
        self, response_or_items: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the ``function_call`` items of a response (or of its ``output`` list; other
        items are skipped) and return the ``function_call_output`` items to send back.

        Args:
            response_or_items: The ``Response`` or its ``output`` items (objects or dicts).
            run: Facts about the caller for these calls (override the dispatcher's).
        """
        return [self._output_item(o) for o in await self.responses_outcomes(response_or_items,
                                                                             run=run)]

    def responses_sync(
        self, response_or_items: Any, *, run: RunContext | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Synchronous :meth:`responses` (a usage error inside a running event loop)."""
        return self.output_items(self.turn_sync(self._function_calls(response_or_items),
                                                run=run))
