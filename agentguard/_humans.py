"""Asking humans about a held call, and waiting for their verdict in the store.

Channels are used two ways. While a caller waits, each channel's ``ask`` runs (a console
prompt, an elicitation form...) and its answers are voted into the store. For a durable hold
(the caller will not wait for the verdict) a channel that can ``present`` a request delivers it
and returns (a Slack post, a log line for the approver terminal): the humans answer later,
through the store, from another process.

The store decides: whatever channel a vote came through, the waiter wakes when the stored
request leaves ``pending``. A caller that gives up (its task is cancelled: an MCP
cancellation, a client that disconnected, a timeout around the call) cancels the request, so
no later vote revives it and it no longer holds a flood-control slot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import anyio

from agentguard.channels.base import ApprovalChannel, ChannelAnswer
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest

__all__ = ["Verdict", "wait_for_verdict"]

OnWait = Callable[[float, float], Awaitable[None]]
Vote = Callable[[ChannelAnswer], Awaitable[None]]

_PRESENT_TIMEOUT = 15.0
_SETTLE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """How waiting ended.

    Attributes:
        request: The request as the store has it now (``None`` if it vanished).
        failures: Why channels could not be used ("slack: ...; console: ..."), if any did.
        still_pending: The caller's wait ended before anyone decided; the request stays
            pending for its own timeout (a durable hold).
    """

    request: ApprovalRequest | None
    failures: str
    still_pending: bool = False


async def _present(channel: ApprovalChannel, request: ApprovalRequest) -> str | None:
    present = getattr(channel, "present", None)
    assert present is not None
    try:
        with anyio.fail_after(_PRESENT_TIMEOUT):
            problem = await present(request)
    except TimeoutError:
        return f"{channel.name}: no answer within {_PRESENT_TIMEOUT:.0f}s"
    except Exception as exc:  # a broken channel counts as unreachable
        return f"{channel.name}: {type(exc).__name__}: {exc}"
    return f"{channel.name}: {problem}" if problem else None


async def wait_for_verdict(
    store: Store, request: ApprovalRequest, channels: Sequence[ApprovalChannel], *,
    fresh: bool, window: float | None, clock: Callable[[], float], vote: Vote,
    on_wait: OnWait | None, on_cancelled: Callable[[], None],
) -> Verdict:
    """Ask ``channels`` about ``request`` and wait until it settles.

    Args:
        store: The shared store.
        request: The request (already stored).
        channels: Channels this request may use.
        fresh: This caller raised the request (an attached caller only watches the store).
        window: Seconds this caller waits; ``None``: until the request expires. A durable
            hold presents the request on channels that can, and runs ``ask`` only on the
            others.
        clock: Unix time.
        vote: Records a channel's answer in the store.
        on_wait: Called about once a second while waiting.
        on_cancelled: Audits that the caller gave up (the request was cancelled).
    """
    hold = window is not None
    presenters = [ch for ch in channels
                  if fresh and hold and getattr(ch, "present", None) is not None]
    askers = [ch for ch in channels if ch not in presenters] if fresh else []
    failures: list[str] = []
    done = anyio.Event()
    deadline = request.expires_at if window is None else min(
        request.expires_at, clock() + max(0.0, window))

    async def run_channel(ch: ApprovalChannel, scope: anyio.CancelScope) -> None:
        try:
            async with aclosing(ch.ask(request)) as answers:
                async for answer in answers:
                    if answer.kind != "vote":
                        if answer.kind == "unreachable":
                            failures.append(f"{ch.name}: {answer.reason}")
                        break
                    await vote(answer)
        except Exception as exc:  # a broken channel counts as unreachable
            failures.append(f"{ch.name}: {type(exc).__name__}: {exc}")
        else:
            if not any(f.startswith(ch.name + ":") for f in failures):
                return
        if fresh and len(failures) >= len(channels):
            done.set()
            scope.cancel()  # every channel failed: refuse now, not at the next poll

    async def watch_store(scope: anyio.CancelScope) -> None:
        total = request.expires_at - request.created_at
        while True:
            remaining = deadline - clock()
            if remaining <= 0 or done.is_set():
                break
            current = await store.wait_for_change(request.id, min(1.0, remaining))
            if current is not None and current.status != "pending":
                break
            if on_wait is not None:
                await on_wait(clock() - request.created_at, total)
        scope.cancel()

    try:
        if fresh:
            for ch in presenters:
                problem = await _present(ch, request)
                if problem is not None:
                    failures.append(problem)
            if not channels:
                failures.append("no approval channel is configured for this rule")
            if len(failures) >= len(channels):
                done.set()
        if not done.is_set():
            async with anyio.create_task_group() as tg:
                for ch in askers:
                    tg.start_soon(run_channel, ch, tg.cancel_scope)
                tg.start_soon(watch_store, tg.cancel_scope)
        current = await store.get_request(request.id)
        if current is not None and current.status == "pending":
            if fresh and done.is_set() and await store.cancel(request.id):
                pass  # unreachable: every channel failed
            elif clock() >= request.expires_at:
                await store.expire(request.id)
            else:
                return Verdict(current, "; ".join(failures), still_pending=True)
            current = await store.get_request(request.id)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            # The caller that raised the request, or a durable hold's retry, gave up: nobody
            # will run the call, so no later vote may revive it.
            if (fresh or hold) and await store.cancel(request.id):
                on_cancelled()
                cancelled = await store.get_request(request.id)
                await _settle([*askers, *presenters], cancelled or request)
        raise
    await _settle([*askers, *presenters], current or request)
    return Verdict(current, "; ".join(failures))


async def _settle(channels: Sequence[ApprovalChannel], request: ApprovalRequest) -> None:
    for ch in channels:
        try:
            with anyio.move_on_after(_SETTLE_TIMEOUT):
                await ch.settled(request)
        except Exception:
            continue
