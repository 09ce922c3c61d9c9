"""A local issuer for OAuth tests: test keys, a JWKS served over real HTTP on 127.0.0.1,
tokens signed with those keys, and uvicorn serving ASGI apps in the test's event loop."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from agentguard.oauth import JwksClient, TokenValidator

ISSUER = "https://issuer.test"
AUDIENCE = "https://proxy.test/mcp"
SILVER = "urn:mace:incommon:iap:silver"
BRONZE = "urn:mace:incommon:iap:bronze"


class Key:
    """A signing key of the test issuer, with its public JWK."""

    def __init__(self, kid: str, private: Any, alg: str) -> None:
        self.kid = kid
        self.private = private
        self.alg = alg
        to_jwk = RSAAlgorithm.to_jwk if alg.startswith(("RS", "PS")) else ECAlgorithm.to_jwk
        self.jwk = {**to_jwk(private.public_key(), as_dict=True), "kid": kid, "use": "sig",
                    "alg": alg}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        # api_jws signs any payload (jwt.encode refuses some of the bad claims we test).
        return jwt.api_jws.encode(json.dumps(claims).encode(), self.private,
                                  algorithm=self.alg,
                                  headers={"kid": self.kid, "typ": "at+jwt", **header})


def rsa_key(kid: str) -> Key:
    return Key(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="session")
def rsa_a() -> Key:
    return rsa_key("rsa-a")


@pytest.fixture(scope="session")
def rsa_b() -> Key:
    return rsa_key("rsa-b")


@pytest.fixture(scope="session")
def ec_a() -> Key:
    return Key("ec-a", ec.generate_private_key(ec.SECP256R1()), "ES256")


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a fresh token for alice, at acr silver; ``None`` values are removed."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "client_id": "agent-cli",
            "scope": "tools:call tools:list", "iat": now, "exp": now + 300,
            "auth_time": now - 60, "acr": SILVER, "amr": ["pwd", "otp"],
            "email": "alice@example.test"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A hand-made token (the attacks PyJWT refuses to produce)."""
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)))


class JwksServer:
    """The issuer's ``jwks_uri``: a real HTTP server whose key set tests can rotate or break."""

    def __init__(self, keys: list[Key]) -> None:
        self.document: Any = {"keys": [k.jwk for k in keys]}
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = (outer.document if isinstance(outer.document, bytes)
                        else json.dumps(outer.document).encode())
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()
        self._stopped = False

    def serve(self, *keys: Key) -> None:
        self.document = {"keys": [k.jwk for k in keys]}

    def stop(self) -> None:
        """Take the endpoint down: connections are refused from now on."""
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)


@pytest.fixture
def jwks_server(rsa_a: Key, ec_a: Key) -> Iterator[JwksServer]:
    server = JwksServer([rsa_a, ec_a])
    yield server
    server.stop()


def make_validator(server: JwksServer, **jwks_kwargs: Any) -> TokenValidator:
    jwks_kwargs.setdefault("min_refresh_interval", 0.0)
    return TokenValidator(issuer=ISSUER, audience=AUDIENCE,
                          jwks=JwksClient(server.url, **jwks_kwargs))


@pytest.fixture
def validator(jwks_server: JwksServer) -> TokenValidator:
    return make_validator(jwks_server)


@asynccontextmanager
async def serving(app: Any, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in this event loop; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
