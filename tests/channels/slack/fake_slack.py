"""A local Slack for tests: the Web API methods agentguard uses, a Socket Mode websocket,
signed interactivity payloads, and an in-process HTTP server for our endpoints.

Nothing here touches the internet. The fake checks what real Slack checks and a test could
otherwise miss: the bearer token, Block Kit limits (text lengths, field counts, button
values; 50 blocks in a message, 100 in a modal), answering ``invalid_blocks`` like Slack
does, and for modals (``views.open``, ``views.update``: JSON bodies) the view limits (title
and buttons 24 characters, ``private_metadata`` 3000, ``submit`` required with inputs) and
the trigger: each click's ``trigger_id`` opens one view (``exchanged_trigger_id`` after that,
``invalid_trigger_id`` for one Slack never issued). A submission (:meth:`FakeSlack.submit`)
sends back the view as Slack stored it, so a test cannot make up its metadata by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-1-test-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0APPROVALS"
TEAM = "T0TEAM"


# --------------------------------------------------------------------------- Block Kit checks


def _text_problems(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, Mapping) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: not a text object"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    problems = []
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        problems.append(f"{where}: text length must be 1..{limit}")
    if "emoji" in obj and obj["type"] != "plain_text":
        problems.append(f"{where}: emoji is only for plain_text")
    if "verbatim" in obj and obj["type"] != "mrkdwn":
        problems.append(f"{where}: verbatim is only for mrkdwn")
    return problems


def _input_problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = _text_problems(block.get("label"), f"{where}.label", 2000, plain_only=True)
    if "hint" in block:
        problems += _text_problems(block["hint"], f"{where}.hint", 2000, plain_only=True)
    if not 1 <= len(block.get("block_id", "x")) <= 255:
        problems.append(f"{where}: block_id length must be 1..255")
    element = block.get("element") or {}
    if not 1 <= len(element.get("action_id", "")) <= 255:
        problems.append(f"{where}.element: action_id length must be 1..255")
    if element.get("type") == "plain_text_input":
        if not 0 < element.get("max_length", 3000) <= 3000:
            problems.append(f"{where}.element: max_length must be 1..3000")
    elif element.get("type") == "radio_buttons":
        options = element.get("options", [])
        if not 1 <= len(options) <= 10:
            problems.append(f"{where}.element: radio_buttons needs 1..10 options")
        for k, option in enumerate(options):
            problems += _text_problems(option.get("text"), f"{where}.options[{k}]", 75)
            if not 1 <= len(option.get("value", "")) <= 150:
                problems.append(f"{where}.options[{k}]: value length must be 1..150")
    else:
        problems.append(f"{where}: unexpected input element {element.get('type')!r}")
    return problems


def block_problems(blocks: Any, *, surface: str = "message") -> list[str]:
    """What real Slack would reject in ``blocks`` (the limits of the Block Kit reference):
    50 blocks in a message, 100 in a modal; ``input`` blocks only in a modal."""
    most = 100 if surface == "modal" else 50
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= most:
        return [f"blocks must be a list of 1..{most} blocks"]
    problems: list[str] = []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        where = f"blocks[{i}]"
        if kind == "header":
            problems += _text_problems(block.get("text"), where, 150, plain_only=True)
        elif kind == "section":
            if "text" in block:
                problems += _text_problems(block["text"], where, 3000)
            fields = block.get("fields", [])
            if len(fields) > 10:
                problems.append(f"{where}: more than 10 fields")
            for j, field in enumerate(fields):
                problems += _text_problems(field, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 10:
                problems.append(f"{where}: context needs 1..10 elements")
            for j, element in enumerate(elements):
                problems += _text_problems(element, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            for j, button in enumerate(block.get("elements", [])):
                at = f"{where}.elements[{j}]"
                problems += _text_problems(button.get("text"), at, 75, plain_only=True)
                if not 1 <= len(button.get("value", "")) <= 2000:
                    problems.append(f"{at}: value length must be 1..2000")
                if not 1 <= len(button.get("action_id", "")) <= 255:
                    problems.append(f"{at}: action_id length must be 1..255")
        elif kind == "input" and surface == "modal":
            problems += _input_problems(block, where)
        else:
            problems.append(f"{where}: unexpected block type {kind!r}")
    return problems


def view_problems(view: Any) -> list[str]:
    """What real Slack would reject in a modal view object."""
    if not isinstance(view, Mapping) or view.get("type") != "modal":
        return ["view: type must be modal"]
    problems = _text_problems(view.get("title"), "view.title", 24, plain_only=True)
    for button in ("submit", "close"):
        if button in view:
            problems += _text_problems(view[button], f"view.{button}", 24, plain_only=True)
    blocks = view.get("blocks")
    if (isinstance(blocks, list) and any(b.get("type") == "input" for b in blocks)
            and "submit" not in view):
        problems.append("view: submit is required with input blocks")
    if len(view.get("private_metadata", "")) > 3000:
        problems.append("view: private_metadata longer than 3000")
    if len(view.get("callback_id", "")) > 255:
        problems.append("view: callback_id longer than 255")
    return problems + block_problems(blocks, surface="modal")


# --------------------------------------------------------------------------- Web API


class FakeSlack:
    """The Slack Web API on 127.0.0.1, recording every call.

    Attributes:
        calls: ``{"method", "params", "token", "response"}`` per call, in order.
        fail: ``method -> error``: answer ``{"ok": false, "error": error}`` (``http_503``
            answers HTTP 503 instead).
        ws_url: What ``apps.connections.open`` hands out.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail: dict[str, str] = {}
        self.ws_url: str | None = None
        self.views: dict[str, dict[str, Any]] = {}
        self._triggers: dict[str, bool] = {}  # issued trigger id -> already exchanged
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = fake._answer(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def _answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        method = path.split("?")[0].removeprefix("/api/")
        if "json" in (headers.get("Content-Type") or ""):
            params = json.loads(body or b"{}")
        else:
            params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        record = {"method": method, "params": params, "token": token}
        status, answer = self._compute(method, params, token)
        record["response"] = answer
        with self._lock:
            self.calls.append(record)
        return status, answer

    def _compute(self, method: str, params: dict[str, Any], token: str
                 ) -> tuple[int, dict[str, Any]]:
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != wanted:
            return 200, {"ok": False, "error": "invalid_auth"}
        if method in self.fail:
            error = self.fail[method]
            return (503, {"ok": False, "error": error}) if error == "http_503" else (
                200, {"ok": False, "error": error})
        if method in ("chat.postMessage", "chat.update"):
            problems = block_problems(params.get("blocks"))
            if problems:
                return 200, {"ok": False, "error": "invalid_blocks", "errors": problems}
        if method in ("views.open", "views.update"):
            return 200, self._view(method, params)
        if method == "chat.postMessage":
            ts = f"{1_700_000_000 + next(self._ts)}.000100"
            return 200, {"ok": True, "channel": params["channel"], "ts": ts,
                         "message": {"text": params.get("text"), "blocks": params["blocks"]}}
        if method == "chat.update":
            return 200, {"ok": True, "channel": params["channel"], "ts": params["ts"],
                         "text": params.get("text")}
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": f"{1_700_000_000 + next(self._ts)}.000200"}
        if method == "apps.connections.open":
            return 200, {"ok": True, "url": self.ws_url}
        return 200, {"ok": False, "error": "unknown_method"}

    def _view(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        problems = view_problems(view)
        if problems:
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {
                "messages": [f"[ERROR] {p}" for p in problems]}}
        with self._lock:
            if method == "views.open":
                trigger = params.get("trigger_id")
                if trigger not in self._triggers:
                    return {"ok": False, "error": "invalid_trigger_id"}
                if self._triggers[trigger]:
                    return {"ok": False, "error": "exchanged_trigger_id"}
                self._triggers[trigger] = True
                view_id = f"V{next(self._ids):09d}"
            else:
                view_id = params.get("view_id")
                if view_id not in self.views:
                    return {"ok": False, "error": "not_found"}
                if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
                    return {"ok": False, "error": "hash_conflict"}
            stored = {**view, "id": view_id, "team_id": TEAM, "app_id": "A0APP",
                      "hash": f"{time.time():.6f}.{next(self._ids)}",
                      "private_metadata": view.get("private_metadata", ""),
                      "callback_id": view.get("callback_id", ""), "state": {"values": {}}}
            self.views[view_id] = stored
        return {"ok": True, "view": stored}

    def issue_trigger(self) -> str:
        """A trigger id as Slack puts in an interaction payload (valid for one view)."""
        trigger = f"{next(self._ids)}.{int(time.time())}.{hashlib.sha1(os.urandom(8)).hexdigest()}"
        with self._lock:
            self._triggers[trigger] = False
        return trigger

    def click(self, user_id: str, action_id: str, value: str, **kw: Any) -> dict[str, Any]:
        """A ``block_actions`` payload carrying a trigger id this fake issued."""
        return block_actions(user_id, action_id, value, trigger_id=self.issue_trigger(), **kw)

    def opened(self) -> dict[str, Any]:
        """The view of the latest successful ``views.open``, as Slack stored it."""
        opened = [c for c in self.calls_to("views.open") if c["response"].get("ok")]
        assert opened, "no view was opened"
        return opened[-1]["response"]["view"]

    def submit(self, user_id: str, view: Mapping[str, Any], values: Mapping[str, Any] | None
               = None, *, team: str = TEAM) -> dict[str, Any]:
        """A ``view_submission`` payload for ``view`` (one this fake opened) with ``values``
        as the state of its inputs (``{block_id: {action_id: {...}}}``)."""
        with self._lock:
            stored = self.views[view["id"]]
        return {
            "type": "view_submission",
            "team": {"id": team, "domain": "example"},
            "user": {"id": user_id, "username": "display-name", "name": "Display Name",
                     "team_id": team},
            "api_app_id": "A0APP",
            "token": "legacy-verification-token-unused",
            "trigger_id": self.issue_trigger(),
            "view": {**stored, "state": {"values": dict(values or {})}},
            "response_urls": [],
            "is_enterprise_install": False,
        }

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["method"] == method]

    async def wait(self, method: str, count: int = 1, timeout: float = 15.0
                   ) -> list[dict[str, Any]]:
        """Wait until ``method`` was called ``count`` times; return those calls."""
        with anyio.fail_after(timeout):
            while len(self.calls_to(method)) < count:
                await anyio.sleep(0.02)
        return self.calls_to(method)


def buttons(post: Mapping[str, Any]) -> dict[str, str]:
    """``action_id -> value`` of the buttons in a recorded chat.postMessage/update."""
    out = {}
    for block in post["params"]["blocks"]:
        if block["type"] == "actions":
            out.update({e["action_id"]: e["value"] for e in block["elements"]})
    return out


def all_text(blocks: list[dict[str, Any]]) -> str:
    """Every text in ``blocks``, joined (what a reader of the message sees, in markup)."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(texts)


# --------------------------------------------------------------------------- Socket Mode


class FakeSocketMode:
    """A Socket Mode websocket on 127.0.0.1: sends envelopes, records acknowledgements."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.connections = 0
        self._outbox: queue.Queue[str] = queue.Queue()
        self._ids = itertools.count(1)
        self._server = serve(self._handle, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSocketMode:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/link/?ticket=t-123"

    def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            ws.send(json.dumps({"type": "hello", "num_connections": 1,
                                "connection_info": {"app_id": "A0APP"}}))
            while True:
                with suppress(queue.Empty):
                    ws.send(self._outbox.get(timeout=0.02))
                try:
                    message = ws.recv(timeout=0.02)
                except TimeoutError:
                    continue
                self.acks.append(json.loads(message))
        except ConnectionClosed:
            return

    def send_interactive(self, payload: Mapping[str, Any]) -> str:
        """Queue an ``interactive`` envelope; return its envelope id."""
        envelope_id = f"env-{next(self._ids)}"
        self._outbox.put(json.dumps({"envelope_id": envelope_id, "type": "interactive",
                                     "payload": payload, "accepts_response_payload": False,
                                     "retry_attempt": 0, "retry_reason": ""}))
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = 15.0) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                for ack in list(self.acks):
                    if ack.get("envelope_id") == envelope_id:
                        return ack
                await anyio.sleep(0.02)


# --------------------------------------------------------------------------- interactivity


def block_actions(user_id: str, action_id: str, value: str, *, channel: str = CHANNEL,
                  ts: str = "1700000001.000100", team: str = TEAM,
                  trigger_id: str = "123.456.abc") -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it for a button click."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": "mallory-display-name", "name": "Display Name",
                 "team_id": team},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token-unused",
        "team": {"id": team, "domain": "example"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "agentguard", "blocks": []},
        "response_url": "https://hooks.slack.invalid/actions/T0/1/xyz",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "agentguard_decision",
                     "value": value, "action_ts": "1700000002.000300",
                     "text": {"type": "plain_text", "text": "Approve"}}],
    }


def signed(payload: Mapping[str, Any], *, secret: str = SIGNING_SECRET,
           timestamp: float | None = None) -> tuple[bytes, dict[str, str]]:
    """Form-encode ``payload`` and sign it like Slack: v0=HMAC-SHA256(secret, v0:ts:body)."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest.hexdigest()}


# --------------------------------------------------------------------------- HTTP


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in this event loop; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


def _post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def http_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST from a worker thread (the server runs in this event loop)."""
    return await anyio.to_thread.run_sync(_post, url, body, headers)
