"""TOTP codes over MCP URL-mode elicitation: the client gets a link, never the code.

When the proxy serves Streamable HTTP it also serves ``/agentguard/reauth/{token}``: a page
asking the subject's TOTP code. For a held call whose rule opts in to ``mcp-elicitation``,
:meth:`ReauthLinks.ask_code` sends the client a URL-mode elicitation pointing there and waits
for the code to be POSTed to the page; the caller (:class:`~agentguard.reauth.TotpReauthenticator`)
then verifies it (single-use steps, lockout). The code travels browser → proxy only, so
neither the MCP client nor the model sees it; "accept" from the client only means the user
agreed to open the link.

A token is unguessable (256 bits), bound to one (request, subject, attempt), answered once,
and dropped when its attempt ends. When the page got its code, or the token expired, the
client is sent ``notifications/elicitation/complete`` with the elicitation's id where its
protocol has that notification (see :class:`~agentguard.proxy.askers.CompletionNotifier`).

Everything else — a stdio proxy, a rule that does not opt in, a client without URL-mode
elicitation — falls back to the given ``ask_code`` (the console).

Passkey step-up (``reauth: {method: passkey}``) is offered the same way, but the link points
at ``agentguard serve --web``'s step-up page, where the passkey's relying party lives
(:meth:`ReauthLinks.offer_passkey`, the ``announce`` hook of
:class:`~agentguard.reauth.passkey_mailbox.MailboxStepUp`).
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
from mcp.types import ElicitRequest, ElicitRequestURLParams, ElicitResult

from agentguard.policy import Policy
from agentguard.proxy.askers import Asker, CompletionNotifier
from agentguard.reauth.totp import AskCode
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest

__all__ = ["PATH_PREFIX", "ReauthLinks", "reauth_asker"]

logger = logging.getLogger(__name__)

PATH_PREFIX = "/agentguard/reauth/"
CHANNEL = "mcp-elicitation"
_MAX_BODY = 4096
_ASKER: ContextVar[Asker | None] = ContextVar("agentguard_reauth_asker", default=None)


@contextmanager
def reauth_asker(asker: Asker) -> Iterator[None]:
    """Let re-authentication started inside this block reach the client through ``asker``."""
    token = _ASKER.set(asker)
    try:
        yield
    finally:
        _ASKER.reset(token)


@dataclass
class _Pending:
    request_id: str
    subject: str
    attempt: int
    tool: str
    server: str
    elicitation_id: str
    done: anyio.Event = field(default_factory=anyio.Event)
    code: str | None = field(default=None, repr=False)


def _opted_in(policy: Policy | None, request: ApprovalRequest) -> bool:
    if CHANNEL in request.approval.channels:
        return True
    if policy is None or request.rule_id is None:
        return False
    model = policy.model
    for rule in model.rules:
        if rule.id == request.rule_id:
            named = rule.channels
            if named is None:
                spec = model.classes.get(request.privilege)
                named = spec.channels if spec is not None else None
            return CHANNEL in (named or ())
    return False


def _url_capable(asker: Asker) -> bool:
    caps = asker.capabilities
    return caps is not None and caps.elicitation is not None and caps.elicitation.url is not None


class ReauthLinks:
    """The re-authentication pages of one HTTP proxy and the ``ask_code`` that uses them.

    Args:
        base_url: Where the client's user reaches the proxy, e.g. ``http://127.0.0.1:8080``
            or the configured ``public_url``; links are ``{base_url}/agentguard/reauth/...``.
        fallback: ``ask_code`` used whenever URL mode is not (the console prompt).
        policy: Tells which rules opt in (``channels: [mcp-elicitation]``).
        clock: Unix time, compared with the request's expiry.
    """

    def __init__(self, base_url: str, fallback: AskCode, *, policy: Policy | None = None,
                 clock: Any = time.time) -> None:
        self._base = base_url.rstrip("/")
        self._fallback = fallback
        self._policy = policy
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    async def ask_code(self, subject: str, request: ApprovalRequest, attempt: int) -> str | None:
        """The :data:`~agentguard.reauth.totp.AskCode` hook: a link for the client, else the
        fallback. ``None`` when the user declined the link or no code came in time."""
        asker = _ASKER.get()
        if asker is None or not _url_capable(asker) or not _opted_in(self._policy, request):
            return await self._fallback(subject, request, attempt)
        call = request.call
        token = secrets.token_urlsafe(32)
        pending = _Pending(request.id, subject, attempt, str(call.get("tool", "")),
                           str(call.get("server", "")), secrets.token_urlsafe(16))
        self._pending[token] = pending
        try:
            again = f" (attempt {attempt})" if attempt > 1 else ""
            message = (f"agentguard: {escape_text(subject)} must re-authenticate with a TOTP "
                       f"code to run {escape_text(pending.tool)} on "
                       f"{escape_text(pending.server)}{again}. Open the link and type the code "
                       "there; never paste it into the chat.")
            answer = await asker.ask(ElicitRequest(params=ElicitRequestURLParams(
                mode="url", message=message, url=f"{self._base}{PATH_PREFIX}{token}",
                elicitation_id=pending.elicitation_id)))
            if not isinstance(answer, ElicitResult):
                logger.info("URL elicitation failed; asking on the console instead")
                self._pending.pop(token, None)
                return await self._fallback(subject, request, attempt)
            if answer.action != "accept":
                return None  # the user declined to open the link: nobody will type a code
            with anyio.move_on_after(max(0.0, request.expires_at - self._clock())):
                await pending.done.wait()
            # Answered or expired, the link is done with: drop it before the client hears so.
            self._pending.pop(token, None)
            if isinstance(asker, CompletionNotifier):
                await asker.notify_elicitation_complete(pending.elicitation_id)
            return pending.code
        finally:
            self._pending.pop(token, None)

    async def offer_passkey(self, subject: str, link: str, request: ApprovalRequest,
                            ) -> bool | None:
        """Offer a passkey step-up page (``agentguard serve --web``'s ``/stepup/...``) to the
        client as a URL-mode elicitation: the ``announce`` hook of
        :class:`~agentguard.reauth.passkey_mailbox.MailboxStepUp`.

        The assertion travels browser -> web page -> store, and the guard verifies it; the
        client only opens the link. Returns ``True`` when the user agreed to open it,
        ``False`` when they declined (nobody will confirm), ``None`` when URL mode is not
        available here (the link must be sent some other way).
        """
        asker = _ASKER.get()
        if asker is None or not _url_capable(asker) or not _opted_in(self._policy, request):
            return None
        call = request.call
        message = (f"agentguard: {escape_text(subject)} must confirm with a passkey to run "
                   f"{escape_text(str(call.get('tool', '')))} on "
                   f"{escape_text(str(call.get('server', '')))}. Open the link, read the call "
                   "and confirm it there.")
        answer = await asker.ask(ElicitRequest(params=ElicitRequestURLParams(
            mode="url", message=message, url=link,
            elicitation_id=secrets.token_urlsafe(16))))
        if not isinstance(answer, ElicitResult):
            return None
        return answer.action == "accept"

    def wrap(self, app: Any) -> Any:
        """An ASGI app serving the re-authentication pages and passing the rest to ``app``.

        Outermost on purpose: a browser carries neither JSON-RPC bodies nor a bearer token,
        and the unguessable single-use token in the path is the page's only credential.
        """

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            path = scope.get("path", "") if scope.get("type") == "http" else ""
            if not path.startswith(PATH_PREFIX):
                await app(scope, receive, send)
                return
            await self._page(scope, receive, send, path[len(PATH_PREFIX):])

        return asgi

    async def _page(self, scope: Any, receive: Any, send: Any, token: str) -> None:
        method = scope.get("method")
        pending = self._pending.get(token)
        if method == "GET":
            if pending is None or pending.done.is_set():
                await _respond(send, 404, _GONE)
            else:
                await _respond(send, 200, _form(pending))
            return
        if method != "POST":
            await _respond(send, 405, _page_html("Method not allowed", ""))
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, _page_html("Too large", ""))
            return
        # Re-read after the await: another POST may have answered this token meanwhile.
        pending = self._pending.pop(token, None)
        if pending is None or pending.done.is_set():
            await _respond(send, 404, _GONE)
            return
        codes = parse_qs(body.decode("utf-8", "replace")).get("code") or [""]
        pending.code = codes[0]
        pending.done.set()
        await _respond(send, 200, _page_html("Code received", (
            "<p>The result shows in your MCP client. You can close this page.</p>")))


def _page_html(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


_GONE = _page_html("Link used or expired",
                   "<p>This re-authentication link was already used or has expired.</p>")


def _form(pending: _Pending) -> str:
    def show(text: str) -> str:
        return html.escape(escape_text(text))

    return _page_html("agentguard re-authentication", (
        f"<p>Type the TOTP code of <b>{show(pending.subject)}</b> to run "
        f"<code>{show(pending.tool)}</code> on <code>{show(pending.server)}</code>.</p>"
        "<form method='post'><input name='code' inputmode='numeric' autocomplete='one-time-code'"
        " maxlength='8' autofocus required> <button type='submit'>Verify</button></form>"))


async def _read_body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Any, status: int, page: str | None) -> None:
    body = (page or "").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy",
         b"default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    ]})
    await send({"type": "http.response.body", "body": body})
