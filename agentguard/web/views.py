"""HTML of the web approval page: Jinja2 templates with autoescaping, strict headers.

Everything from the agent, the tool server or the store is escaped twice over: first as text by
:func:`agentguard.sanitize.escape_text` (control and bidi characters shown as escapes, as in
every channel), then as HTML by Jinja2's autoescaping. Arguments are shown in full (never
truncated) through :func:`agentguard.channels.render.render_request`, the same text the
terminal and chat channels show. The Content-Security-Policy allows only this page's own
script and stylesheet (no inline script), so nothing the agent wrote can run in the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from agentguard.channels.render import format_call_hash, render_request, time_left
from agentguard.durations import format_duration
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest, ApprovalSpec

__all__ = ["HEADERS", "Views", "grant_choices"]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PRESETS = (900.0, 3600.0, 4 * 3600.0, 86400.0)


def grant_choices(approval: ApprovalSpec) -> list[tuple[float, str]]:
    """The "approve for N" choices a rule allows: presets up to its ``max_grant``, and it.

    Under ``assurance: signed`` too: the passkey signs the grant asked for, and the guard's
    grant carries the signatures and is verified again whenever it is used.
    """
    max_grant = approval.max_grant
    if max_grant <= 0:
        return []
    out = [(s, format_duration(s)) for s in _PRESETS if s < max_grant]
    return [*out, (max_grant, format_duration(max_grant))]


def _call(request: ApprovalRequest, key: str) -> str:
    call = request.call if isinstance(request.call, Mapping) else {}
    return escape_text(str(call.get(key, "?")))


def _full_text(request: ApprovalRequest) -> str:
    return render_request(request, width=100, arg_limit=2**62)


@dataclass
class Views:
    """Renders pages and serves the static files."""

    _env: Any = field(default=None, repr=False)

    def env(self) -> Any:
        if self._env is None:
            import jinja2

            self._env = jinja2.Environment(
                loader=jinja2.PackageLoader("agentguard.web", "templates"),
                autoescape=True, undefined=jinja2.StrictUndefined)
            self._env.filters.update(esc=lambda v: escape_text(str(v)), left=time_left,
                                     call=_call, full_text=_full_text,
                                     hash=format_call_hash, duration=format_duration)
        return self._env

    def page(self, name: str, *, status: int = 200, **context: Any) -> Any:
        from starlette.responses import HTMLResponse

        html = self.env().get_template(name).render(**context)
        return HTMLResponse(html, status, headers=HEADERS)

    def redirect(self, where: str) -> Any:
        from starlette.responses import RedirectResponse

        return RedirectResponse(where, 303, headers=HEADERS)

    async def script(self, _: Any) -> Any:
        return self._static("app.js", "text/javascript")

    async def stylesheet(self, _: Any) -> Any:
        return self._static("app.css", "text/css")

    def _static(self, name: str, media_type: str) -> Any:
        from starlette.responses import Response

        body = resources.files("agentguard.web").joinpath("static", name).read_bytes()
        return Response(body, media_type=media_type, headers=HEADERS)
