"""The issuer's signing keys: a JWKS fetched over HTTPS, cached, and refreshed on rotation.

A token naming a ``kid`` the cache does not hold triggers one refresh (at most one per
``min_refresh_interval``, so random ``kid`` values cannot make us hammer the issuer). When
the key set cannot be fetched, validation fails closed with
:class:`~agentguard.oauth.errors.KeySetUnavailable`: no stale keys are used past ``ttl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from agentguard.errors import ConfigError
from agentguard.oauth.errors import KeySetUnavailable, UnknownKey

__all__ = ["ALGORITHM_KEY_TYPES", "JwksClient"]

#: Asymmetric JWS algorithms and the (kty, crv) their keys must have (crv None: any/none).
ALGORITHM_KEY_TYPES: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})), "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return  # a local issuer (tests, a sidecar); nothing crosses a network
    raise ConfigError(
        f"the JWKS URL must be https:// (plain http only on loopback), got {url!r}: keys "
        "fetched over plain HTTP could be replaced in transit"
    )


def _usable(jwk: Any) -> bool:
    """A public signing key of a type we verify with (private or symmetric keys: never)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
        return False
    if jwk["kty"] not in {"RSA", "EC", "OKP"} or "d" in jwk:
        return False
    if jwk.get("use", "sig") != "sig":
        return False
    ops = jwk.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    kty, curves = ALGORITHM_KEY_TYPES[alg]
    if jwk.get("kty") != kty or jwk.get("alg", alg) != alg:
        return False
    return curves is None or jwk.get("crv") in curves


class JwksClient:
    """Fetches and caches an issuer's JSON Web Key Set.

    Args:
        url: The ``jwks_uri`` (https; plain http only on loopback).
        ttl: Seconds a fetched key set is used before it is fetched again.
        min_refresh_interval: Fewest seconds between two fetches triggered by unknown key
            ids or by failures (rotation is picked up, floods of random ``kid`` are not
            forwarded to the issuer).
        timeout: Seconds for one fetch.
        max_bytes: Largest key set accepted.
        http_client: An ``httpx2.AsyncClient`` to fetch with (custom CA, proxy...); by
            default a client is made per fetch.
        clock: Monotonic seconds (tests may inject one).

    Raises:
        ConfigError: the URL is not https (or loopback http).
    """

    def __init__(
        self, url: str, *, ttl: float = 300.0, min_refresh_interval: float = 30.0,
        timeout: float = 5.0, max_bytes: int = 256 * 1024,
        http_client: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_url(url)
        self.url = url
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._client = http_client
        self._clock = clock
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._failure: KeySetUnavailable | None = None
        self._lock = anyio.Lock()
        self._parsed: dict[tuple[str, str], PyJWK] = {}

    async def keys_for(self, kid: str | None, alg: str) -> list[PyJWK]:
        """The keys that may have signed a token with this ``kid`` and ``alg``.

        Raises:
            UnknownKey: no key matches, even after a refresh.
            KeySetUnavailable: the key set could not be fetched (fail closed).
        """
        await self._ensure(force=False)
        found = self._match(kid, alg)
        if not found:
            await self._ensure(force=True)  # the issuer may have rotated its keys
            found = self._match(kid, alg)
        if not found:
            which = f"key id {kid!r}" if kid is not None else "no key id"
            raise UnknownKey(f"no key in the issuer's key set matches {which} for {alg}")
        if kid is None and len(found) > 1:
            raise UnknownKey(f"the token names no key id and {len(found)} keys fit {alg}")
        return found

    async def refresh(self) -> None:
        """Fetch the key set now (subject to ``min_refresh_interval``).

        Raises:
            KeySetUnavailable: the fetch failed.
        """
        await self._ensure(force=True)

    # ------------------------------------------------------------------ internals
    def _match(self, kid: str | None, alg: str) -> list[PyJWK]:
        out = []
        for jwk in self._keys or ():
            if kid is not None and jwk.get("kid") != kid:
                continue
            if not _fits(jwk, alg):
                continue
            cache_key = (json.dumps(jwk, sort_keys=True), alg)
            key = self._parsed.get(cache_key)
            if key is None:
                try:
                    key = PyJWK(jwk, algorithm=alg)
                except PyJWTError:
                    continue  # a broken entry: skip it, other keys may still verify
                self._parsed[cache_key] = key
            out.append(key)
        return out

    async def _ensure(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock()
            fresh = self._keys is not None and now - self._fetched_at < self.ttl
            recent = (self._attempted_at is not None
                      and now - self._attempted_at < self.min_refresh_interval)
            if fresh and (not force or recent):
                return
            if recent and self._failure is not None:
                raise self._failure  # the issuer just failed: do not hammer it
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except KeySetUnavailable as exc:
                self._failure = exc
                if not fresh:
                    self._keys = None  # past ttl nothing old is trusted: fail closed
                raise
            self._keys, self._fetched_at, self._failure = keys, self._clock(), None
            self._parsed.clear()

    async def _fetch(self) -> list[dict[str, Any]]:
        try:
            if self._client is not None:
                raw = await self._get(self._client)
            else:
                async with httpx2.AsyncClient(timeout=self.timeout,
                                              follow_redirects=False) as client:
                    raw = await self._get(client)
        except (httpx2.HTTPError, TimeoutError, OSError) as exc:
            raise KeySetUnavailable(
                f"the issuer's key set could not be fetched ({type(exc).__name__})") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise KeySetUnavailable("the issuer's key set is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeySetUnavailable("the issuer's key set has no 'keys' list")
        keys = [k for k in data["keys"] if _usable(k)]
        if not keys:
            raise KeySetUnavailable("the issuer's key set holds no public signing key")
        return keys

    async def _get(self, client: httpx2.AsyncClient) -> bytes:
        headers = {"accept": "application/jwk-set+json, application/json"}
        with anyio.fail_after(self.timeout):
            async with client.stream("GET", self.url, headers=headers) as response:
                if response.status_code != 200:
                    raise KeySetUnavailable(
                        f"the issuer's key set answered HTTP {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise KeySetUnavailable(
                            f"the issuer's key set is larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
        return b"".join(chunks)
