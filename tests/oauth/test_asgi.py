"""BearerAuth in front of a real Starlette app under uvicorn, driven over HTTP with httpx2."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agentguard.oauth import (
    BearerAuth,
    StepUpChallenge,
    TokenValidator,
    challenge_response,
    request_step_up,
    token_from_scope,
)
from tests.oauth.conftest import AUDIENCE, SILVER, JwksServer, Key, claims, serving

pytestmark = pytest.mark.anyio

CHALLENGE = StepUpChallenge(acr_values=(SILVER,), max_age=300,
                            description="payroll needs a fresh silver login")


async def echo(request: Request) -> JSONResponse:
    token = token_from_scope(request)
    user = request.scope.get("user")
    return JSONResponse({
        "authorization": request.headers.get("authorization"),
        "subject": token.subject if token else None, "acr": token.acr if token else None,
        "user": user.display_name if user is not None else None,
    })


async def step_up(request: Request) -> JSONResponse:
    """An edge refusing a call for step-up: it flags the challenge and answers as usual."""
    assert request_step_up(request, CHALLENGE)
    return JSONResponse({"ran": "the app's own answer"})


async def streamed(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        request_step_up(request, CHALLENGE)  # too late: the status line has gone out
        yield b"second"

    return StreamingResponse(body())


async def metadata(request: Request) -> JSONResponse:
    return JSONResponse({"resource": AUDIENCE, "saw_token": token_from_scope(request) is not None})


APP = Starlette(routes=[
    Route("/echo", echo), Route("/stepup", step_up), Route("/stream", streamed),
    Route("/.well-known/oauth-protected-resource", metadata),
])

Serve = Callable[..., AbstractAsyncContextManager[httpx2.AsyncClient]]


@pytest.fixture
def served(validator: TokenValidator) -> Serve:
    @asynccontextmanager
    async def serve(**options: object) -> AsyncIterator[httpx2.AsyncClient]:
        async with serving(BearerAuth(APP, validator, **options)) as url, \
                httpx2.AsyncClient(base_url=url, timeout=10) as client:
            yield client

    return serve


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_valid_token_reaches_the_app_without_its_header(served: Serve,
                                                                rsa_a: Key) -> None:
    async with served() as http:
        response = await http.get("/echo", headers=bearer(rsa_a.sign(claims())))
    assert response.status_code == 200
    assert response.json() == {"authorization": None, "subject": "alice", "acr": SILVER,
                               "user": "agent-cli"}


async def test_forward_token_keeps_the_header(served: Serve, rsa_a: Key) -> None:
    token = rsa_a.sign(claims())
    async with served(forward_token=True) as http:
        response = await http.get("/echo", headers=bearer(token))
    assert response.json()["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Basic YWxpY2U6cHc="}])
async def test_no_bearer_token_is_a_401_challenge(served: Serve, headers: dict) -> None:
    async with served(resource_metadata=f"{AUDIENCE}/.well-known/x") as http:
        response = await http.get("/echo", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="agentguard", resource_metadata="{AUDIENCE}/.well-known/x"')
    assert response.json()["error"] == "unauthorized"


async def test_an_invalid_token_is_a_401_naming_why_but_not_the_token(
        served: Serve, rsa_a: Key) -> None:
    token = rsa_a.sign(claims(exp=int(time.time()) - 600))
    async with served() as http:
        response = await http.get("/echo", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="agentguard", error="invalid_token", '
        'error_description="the token has expired"')
    assert token not in response.text and token not in response.headers["www-authenticate"]


@pytest.mark.parametrize("value", ["Bearer", "Bearer a b", "Bearer a\tb"])
async def test_a_malformed_authorization_header_is_a_400(served: Serve, value: str) -> None:
    async with served() as http:
        response = await http.get("/echo", headers={"authorization": value})
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_two_authorization_headers_are_refused(served: Serve, rsa_a: Key) -> None:
    good = rsa_a.sign(claims())
    async with served() as http:
        response = await http.get("/echo", headers=[("authorization", f"Bearer {good}"),
                                                    ("authorization", "Bearer other")])
    assert response.status_code == 400


async def test_optional_auth_lets_anonymous_requests_in_but_not_bad_tokens(
        served: Serve, rsa_a: Key) -> None:
    async with served(required=False) as http:
        anonymous = await http.get("/echo")
        bad = await http.get("/echo", headers=bearer(rsa_a.sign(claims(aud="x"))))
    assert anonymous.status_code == 200 and anonymous.json()["subject"] is None
    assert bad.status_code == 401


async def test_the_issuer_being_down_refuses_with_503(served: Serve, jwks_server: JwksServer,
                                                      rsa_a: Key) -> None:
    jwks_server.stop()
    async with served() as http:
        response = await http.get("/echo", headers=bearer(rsa_a.sign(claims())))
    assert response.status_code == 503
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "temporarily_unavailable"


async def test_the_resource_metadata_is_served_without_a_token(served: Serve) -> None:
    async with served() as http:
        response = await http.get("/.well-known/oauth-protected-resource")
        for method, path in (("POST", "/.well-known/oauth-protected-resource"),
                             ("GET", "/.well-known/oauth-protected-resourcex"),
                             ("GET", "/.well-known/oauth-protected-resource/../../echo")):
            other = await http.request(method, path)
            assert other.status_code == 401, (method, path)
    assert response.status_code == 200
    assert response.json() == {"resource": AUDIENCE, "saw_token": False}


async def test_a_step_up_refusal_becomes_the_rfc_9470_answer(served: Serve,
                                                            rsa_a: Key) -> None:
    async with served() as http:
        response = await http.get("/stepup", headers=bearer(rsa_a.sign(claims())))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="agentguard", error="insufficient_user_authentication", '
        f'error_description="payroll needs a fresh silver login", acr_values="{SILVER}", '
        'max_age="300"')
    assert response.json()["error"] == "insufficient_user_authentication"
    assert "the app's own answer" not in response.text


async def test_a_step_up_flagged_after_the_response_started_leaves_it_intact(
        served: Serve, rsa_a: Key) -> None:
    async with served() as http:
        response = await http.get("/stream", headers=bearer(rsa_a.sign(claims())))
    assert (response.status_code, response.text) == (200, "first second")


async def test_request_step_up_outside_bearer_auth_says_so() -> None:
    assert not request_step_up({"type": "http", "state": {}}, CHALLENGE)
    assert not request_step_up(object(), CHALLENGE)


async def test_challenge_response_for_apps_that_answer_themselves() -> None:
    response = challenge_response(CHALLENGE, realm="agentguard")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="agentguard", error="insufficient_user_authentication"')
    assert response.headers["cache-control"] == "no-store"


async def test_dot_segments_do_not_reach_past_the_exempt_path(
        validator: TokenValidator) -> None:
    """Clients normalise ``..`` away; a raw request could still send it."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [],
             "path": "/.well-known/oauth-protected-resource/../echo"}
    await BearerAuth(APP, validator)(scope, receive, send)
    assert sent[0]["status"] == 401


async def test_a_token_without_the_required_scopes_is_a_403(served: Serve, rsa_a: Key) -> None:
    async with served(required_scopes=["tools:call", "payroll"]) as http:
        narrow = await http.get("/echo", headers=bearer(rsa_a.sign(claims())))
        wide = await http.get("/echo", headers=bearer(rsa_a.sign(claims(
            scope="tools:call payroll"))))
    assert narrow.status_code == 403
    assert narrow.headers["www-authenticate"] == (
        'Bearer realm="agentguard", error="insufficient_scope", '
        'error_description="the token lacks the scope payroll", scope="tools:call payroll"')
    assert wide.status_code == 200
