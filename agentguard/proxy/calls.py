"""One ``tools/call`` through the proxy: pin check, guard, forward, input rounds, render.

The proxy never decides policy. It builds the :class:`~agentguard.types.ToolCall` (server,
upstream tool name, arguments, the configured principal, hints from the cached listing, the
pinned definition hash), lets the guard decide, and then either forwards the call or renders
the refusal as a tool result with ``isError: true`` whose text says what happened, by which
rule, and that retrying will not help. A call still held when ``answer_held_after`` runs out
(50 s by default, before common clients give up at 60 s) is answered the same way, saying
instead that it waits for approval under request X and runs once approved if the identical call
is made again; that retry joins the request. The only refusals made here are the ones no policy
can lift: a tool whose definition changed since it was pinned, a name two servers claim, or a
tool whose ``inputSchema`` is not a valid JSON Schema (its arguments cannot be checked). The
guard validates every call it decides against that schema before any rule reads the arguments,
and what is forwarded is the frozen snapshot it decided.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar, cast

import anyio
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    LOG_LEVEL_META_KEY,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    ErrorData,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
    RequestParamsMeta,
    TextContent,
    Tool,
)
from pydantic import TypeAdapter

from agentguard.arguments import fill_schema_defaults
from agentguard.canonical import thaw
from agentguard.errors import ConfigError
from agentguard.guard import Guard
from agentguard.proxy.answers import unstamped_model
from agentguard.proxy.askers import Asker, RequestContext
from agentguard.proxy.catalog import Collision, Entry, hints_for
from agentguard.proxy.channels import ElicitationChannel
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.pins import PinStatus, tool_definition_hash
from agentguard.proxy.reauth_url import reauth_asker
from agentguard.proxy.relay import Skip, may_skip_guard
from agentguard.proxy.upstream import Upstream, strip_envelope
from agentguard.types import Authorization, CallContext, ToolCall
from agentguard.validation import ArgumentValidator

if TYPE_CHECKING:
    from starlette.requests import Request

    from agentguard.oauth.tokens import VerifiedToken

__all__ = [
    "CALL_RESULT",
    "CallInfo",
    "call_info",
    "forward_tool",
    "input_rounds",
    "refusal_result",
    "run_tool_call",
]

logger = logging.getLogger(__name__)

MAX_INPUT_ROUNDS = 10
CALL_RESULT: TypeAdapter[CallToolResult | InputRequiredResult] = TypeAdapter(
    CallToolResult | InputRequiredResult)
"""How the SDK route reads an upstream's ``tools/call`` result."""
R = TypeVar("R")


class CallInfo:
    """Facts about the downstream request that the guard and the audit log need."""

    __slots__ = ("client", "request", "session_id", "source_ip", "token", "transport")

    def __init__(self, session_id: str | None, source_ip: str | None, transport: str,
                 client: str, request: Request | None = None) -> None:
        self.session_id = session_id
        self.source_ip = source_ip
        self.transport = transport
        self.client = client
        self.request = request
        # Verified by BearerAuth (agentguard.oauth) when the HTTP proxy requires tokens.
        self.token = _verified_token(request)


def call_info(core: ProxyCore, ctx: RequestContext, client: str) -> CallInfo:
    """Session, source address and transport of a downstream request."""
    request = ctx.request
    if request is None:
        return CallInfo(core.session_id, None, "stdio", client)
    sid = request.headers.get("mcp-session-id")
    peer = request.client
    return CallInfo(sid, peer.host if peer is not None else None, "http", client, request)


def _verified_token(request: Request | None) -> VerifiedToken | None:
    if request is None:
        return None
    from agentguard.oauth.asgi import token_from_scope

    return token_from_scope(request)


def refusal_result(auth: Authorization) -> CallToolResult:
    """The refusal as the model sees it: a tool error saying what happened and why."""
    return CallToolResult(is_error=True, content=[TextContent(type="text", text=auth.message())])


async def input_rounds(
    send: Callable[[InputResponses | None, str | None], Awaitable[R | InputRequiredResult]],
    asker: Asker,
) -> R:
    """Drive an upstream's ``InputRequiredResult`` rounds, asking the downstream client.

    Raises:
        MCPError: the client could not answer, or the upstream asked too many times.
    """
    responses: InputResponses | None = None
    state: str | None = None
    for _ in range(MAX_INPUT_ROUNDS):
        result = await send(responses, state)
        if not isinstance(result, InputRequiredResult):
            return result
        asked = dict(result.input_requests or {})
        answers: dict[str, InputResponse | ErrorData] = {}

        async def one(key: str, request: InputRequest,
                      answers: dict[str, InputResponse | ErrorData] = answers) -> None:
            answers[key] = await asker.ask(request)

        async with anyio.create_task_group() as tg:
            for key, request in asked.items():
                tg.start_soon(one, key, request)
        given: InputResponses = {}
        for key, answer in answers.items():
            if isinstance(answer, ErrorData):
                raise MCPError.from_error_data(answer)
            given[key] = answer
        responses, state = (given or None), result.request_state
    raise MCPError(code=INTERNAL_ERROR,
                   message=f"the upstream asked for input more than {MAX_INPUT_ROUNDS} times")


async def forward_tool(core: ProxyCore, upstream: Upstream, name: str,
                       arguments: Mapping[str, object] | None,
                       meta: Mapping[str, object] | None,
                       asker: Asker) -> CallToolResult:
    """Send a (guarded) call upstream, relaying progress and input requests."""
    fwd_meta = strip_envelope(meta)
    if upstream.modern and core.log_level is not None:
        # A 2026-07-28 upstream logs only for requests that ask (no logging/setLevel there).
        fwd_meta = {**(fwd_meta or {}), LOG_LEVEL_META_KEY: core.log_level}

    async def send(responses: InputResponses | None, state: str | None
                   ) -> CallToolResult | InputRequiredResult:
        request = CallToolRequest(params=CallToolRequestParams(
            name=name, arguments=dict(arguments) if arguments is not None else None,
            input_responses=responses, request_state=state,
            # RequestParamsMeta is a TypedDict (total=False) of the same JSON object
            _meta=cast(RequestParamsMeta | None, fwd_meta)))
        return await upstream.request(lambda c: c.session.send_request(
            request, CALL_RESULT, progress_callback=asker.progress))

    with core.asking(upstream.name, asker):
        return unstamped_model(await input_rounds(send, asker))


async def _authorize(guard: Guard, call: ToolCall, asker: Asker,
                     wait_message: Callable[[float, float], str],
                     validator: ArgumentValidator, answer_after: float | None) -> Authorization:
    async def on_wait(elapsed: float, timeout: float) -> None:
        await asker.progress(elapsed, timeout, wait_message(elapsed, timeout))

    # A TOTP step-up may send the client a link (URL-mode elicitation) through this asker.
    # A durable hold (``answer_after``) answers ``pending`` before the client's own timeout;
    # the request lives on, and the identical call made again joins it (runs once approved,
    # hears the refusal otherwise): the guard's join and claim, not a second copy here.
    with reauth_asker(asker):
        return await guard.authorize(call, validator=validator,
                                     extra_channels=[ElicitationChannel(asker)],
                                     on_wait=on_wait, wait=answer_after)


def _waiting(elapsed: float, timeout: float) -> str:
    left = max(0, int(timeout - elapsed))
    return f"held by agentguard: waiting for approval ({left}s left)"


async def run_tool_call(core: ProxyCore, target: Entry[Tool] | Collision,
                        params: CallToolRequestParams, info: CallInfo,
                        asker: Asker) -> CallToolResult:
    """Authorize and forward one call; every refusal comes back as an ``isError`` result."""
    guard = core.guard
    args = params.arguments or {}
    if isinstance(target, Collision):
        call = ToolCall(tool=params.name, args=args, principal=core.principal,
                        server="*", session_id=info.session_id, origin="mcp-proxy")
        return refusal_result(guard.refuse(call, target.message(), event="call.denied"))
    entry = target
    # The policy, the approver and the hash see the call with the schema's defaults filled
    # in, exactly as the decorator and the adapters show it; that call is what is forwarded.
    args = fill_schema_defaults(args, entry.item.input_schema)
    pin: PinStatus | None
    if entry.pin is not None and entry.pin.state != "pinned":
        pin = await core.pins.recheck(entry.server, entry.name, entry.pin.hash)
        if pin.state == "pinned":  # approved from another process meanwhile
            core.spawn(_relist, core, core.upstreams[entry.server])
        entry = replace(entry, pin=pin, hints=hints_for(
            entry.item, unpinned=pin.state == "unpinned"))
    pin = entry.pin
    hints = entry.hints or hints_for(entry.item, unpinned=pin is None or pin.state == "unpinned")
    meta = dict(params.meta) if params.meta else None
    if isinstance(may_skip_guard(guard, entry), Skip):  # the one rule (see .relay)
        return await forward_tool(core, core.upstreams[entry.server], entry.name,
                                  params.arguments, meta, asker)
    call = ToolCall(
        tool=entry.name, args=args, principal=core.principal, server=entry.server,
        session_id=info.session_id, origin="mcp-proxy", hints=hints,
        context=CallContext(source_ip=info.source_ip, extra={
            "mcp_client": info.client, "transport": info.transport,
            "exposed_name": entry.exposed,
            # What the model read about the tool, shown (escaped) to the approver: a
            # poisoned description is evidence the human should see.
            "tool_title": entry.item.title,
            "tool_description": (entry.item.description or "")[:2000]}),
        tool_definition_hash=pin.hash if pin is not None else None,
    )
    if pin is not None and pin.state == "changed":
        reason = (f"the definition of tool {entry.name!r} on server {entry.server!r} changed "
                  f"since it was pinned (pinned {str(pin.pinned_hash)[:12]}, now "
                  f"{pin.hash[:12]}); an operator must review it (`agentguard pins show "
                  f"{entry.server} {entry.name}`) and run `agentguard pins approve "
                  f"{entry.server} {entry.name} HASH`")
        return refusal_result(guard.refuse(call, reason, event="pin.changed", details={
            "old_hash": pin.pinned_hash, "new_hash": pin.hash}))
    # Types before rules: the arguments are checked against the tool's listed schema
    # before any rule reads them (what an SDK upstream would coerce is refused instead).
    try:
        validator = core.schemas.validator(
            entry.server, entry.name, pin.hash if pin is not None
            else tool_definition_hash(entry.item), entry.item.input_schema)
    except ConfigError as exc:
        reason = (f"tool {entry.name!r} on server {entry.server!r} cannot be called: {exc}, "
                  "so its arguments cannot be checked")
        return refusal_result(guard.refuse(call, reason, outcome="invalid",
                                           event="call.invalid"))
    if info.token is not None:
        from agentguard.oauth.stepup import with_token

        call = replace(call, context=with_token(call.context, info.token))
    auth = await _authorize(guard, call, asker, _waiting, validator,
                            core.config.answer_held_after)
    if not auth.allowed:
        _maybe_step_up(auth, info)
        return refusal_result(auth)
    # What runs is the validated, frozen snapshot the guard decided, never the raw request.
    return await forward_tool(core, core.upstreams[entry.server], entry.name,
                              thaw(auth.call.args), meta, asker)


def _maybe_step_up(auth: Authorization, info: CallInfo) -> None:
    """An OAuth step-up shortfall also answers the HTTP request with RFC 9470's
    ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` (where the response
    has not started yet); the tool result still says what happened."""
    if info.request is None:
        return
    from agentguard.oauth.asgi import request_step_up
    from agentguard.oauth.stepup import step_up_challenge

    challenge = step_up_challenge(auth)
    if challenge is not None:
        request_step_up(info.request, challenge)


async def _relist(core: ProxyCore, upstream: Upstream) -> None:
    try:
        await core.refresh_tools(upstream)
        await core.notifier.list_changed("tools")
    except Exception as exc:
        logger.warning("re-listing %r failed: %s", upstream.name, exc)
