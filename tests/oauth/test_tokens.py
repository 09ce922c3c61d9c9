"""Token validation against a JWKS served over real HTTP: what passes and every way to fail."""

from __future__ import annotations

import hmac
import json
import time
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives import serialization

from agentguard.errors import ConfigError
from agentguard.oauth import (
    InvalidAudience,
    InvalidIssuer,
    InvalidSignature,
    JwksClient,
    KeySetUnavailable,
    MalformedToken,
    MissingClaim,
    TokenError,
    TokenExpired,
    TokenNotYetValid,
    TokenValidator,
    UnknownKey,
    UnsupportedAlgorithm,
    VerifiedClaims,
)
from tests.oauth.conftest import (
    AUDIENCE,
    ISSUER,
    SILVER,
    JwksServer,
    Key,
    b64,
    claims,
    make_validator,
    rsa_key,
    unsigned,
)

pytestmark = pytest.mark.anyio


async def test_a_good_token_yields_its_verified_claims(validator: TokenValidator,
                                                      rsa_a: Key) -> None:
    token = await validator.validate(rsa_a.sign(claims()))
    assert (token.subject, token.issuer, token.audience) == ("alice", ISSUER, (AUDIENCE,))
    assert (token.client_id, token.acr, token.amr) == ("agent-cli", SILVER, ("pwd", "otp"))
    assert token.scopes == ("tools:call", "tools:list")
    assert (token.key_id, token.algorithm) == ("rsa-a", "RS256")
    assert isinstance(token.claims, VerifiedClaims) and token.claims["email"]
    context = token.context_claims()
    assert context["acr"] == SILVER and "email" not in context  # no profile data on calls
    with pytest.raises(TypeError):
        token.claims["acr"] = "forged"  # type: ignore[index]


async def test_ec_keys_verify_too(validator: TokenValidator, ec_a: Key) -> None:
    assert (await validator.validate(ec_a.sign(claims()))).algorithm == "ES256"


async def test_the_key_set_is_fetched_once_and_cached(
        validator: TokenValidator, jwks_server: JwksServer, rsa_a: Key, ec_a: Key) -> None:
    for key in (rsa_a, ec_a, rsa_a):
        await validator.validate(key.sign(claims()))
    assert jwks_server.hits == 1


@pytest.mark.parametrize(("overrides", "error", "words"), [
    ({"aud": "https://other.test/mcp"}, InvalidAudience, "not meant for this resource"),
    ({"aud": ["https://a.test", "https://b.test"]}, InvalidAudience, "not meant"),
    ({"iss": "https://evil.test"}, InvalidIssuer, "another issuer"),
    ({"exp": int(time.time()) - 120}, TokenExpired, "expired"),
    ({"nbf": int(time.time()) + 600}, TokenNotYetValid, "not valid yet"),
    ({"iat": int(time.time()) + 600}, TokenNotYetValid, "in the future"),
    ({"sub": None}, MissingClaim, "'sub'"),
    ({"exp": None}, MissingClaim, "'exp'"),
    ({"exp": "tomorrow"}, MissingClaim, "not a number"),
    ({"exp": True}, MissingClaim, "not a number"),
    ({"iss": ["https://issuer.test"]}, MissingClaim, "not a string"),
])
async def test_claims_that_do_not_fit_are_refused(
        validator: TokenValidator, rsa_a: Key, overrides: dict, error: type[TokenError],
        words: str) -> None:
    token = rsa_a.sign(claims(**overrides))
    with pytest.raises(error) as caught:
        await validator.validate(token)
    assert words in caught.value.description
    assert token not in str(caught.value) and token not in repr(caught.value)


async def test_a_second_audience_in_the_list_is_enough(validator: TokenValidator,
                                                      rsa_a: Key) -> None:
    token = rsa_a.sign(claims(aud=["https://other.test", AUDIENCE]))
    assert (await validator.validate(token)).audience == ("https://other.test", AUDIENCE)


async def test_small_clock_skew_is_tolerated(validator: TokenValidator, rsa_a: Key) -> None:
    now = int(time.time())
    token = rsa_a.sign(claims(exp=now - 5, nbf=now + 5))
    assert (await validator.validate(token)).subject == "alice"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_tokens_are_refused(validator: TokenValidator, alg: str) -> None:
    token = unsigned({"alg": alg, "typ": "JWT"}, claims())
    with pytest.raises(UnsupportedAlgorithm, match="alg none"):
        await validator.validate(token)


async def test_hs256_signed_with_the_public_key_is_refused(
        validator: TokenValidator, jwks_server: JwksServer, rsa_a: Key) -> None:
    """The classic confusion: the verifier's RSA public key used as an HMAC secret."""
    public_pem = rsa_a.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-a", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), sha256).digest()
    with pytest.raises(UnsupportedAlgorithm, match="symmetric"):
        await validator.validate(f"{header}.{payload}.{b64(signature)}")
    assert jwks_server.hits == 0  # refused before any key was looked up


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "none"], []])
def test_symmetric_or_no_algorithms_cannot_be_configured(algorithms: list[str]) -> None:
    with pytest.raises(ConfigError):
        TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks="https://issuer.test/jwks",
                       algorithms=algorithms)


async def test_an_algorithm_off_the_allow_list_is_refused(jwks_server: JwksServer,
                                                         ec_a: Key) -> None:
    validator = TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_server.url,
                               algorithms=["RS256"])
    with pytest.raises(UnsupportedAlgorithm, match="ES256 is not accepted"):
        await validator.validate(ec_a.sign(claims()))


async def test_an_unknown_key_refreshes_the_key_set_once_then_fails(
        validator: TokenValidator, jwks_server: JwksServer, rsa_a: Key) -> None:
    await validator.validate(rsa_a.sign(claims()))
    rogue = rsa_key("rogue")
    with pytest.raises(UnknownKey, match="'rogue'"):
        await validator.validate(rogue.sign(claims()))
    assert jwks_server.hits == 2  # the initial fetch and one refresh for the unknown kid


async def test_rotated_keys_are_picked_up(validator: TokenValidator, jwks_server: JwksServer,
                                          rsa_a: Key, rsa_b: Key) -> None:
    await validator.validate(rsa_a.sign(claims()))
    jwks_server.serve(rsa_b)  # the issuer rotates: a is retired, b is new
    assert (await validator.validate(rsa_b.sign(claims()))).key_id == "rsa-b"
    assert jwks_server.hits == 2


async def test_unknown_key_ids_cannot_make_us_hammer_the_issuer(
        jwks_server: JwksServer, rsa_a: Key) -> None:
    validator = make_validator(jwks_server, min_refresh_interval=60.0)
    await validator.validate(rsa_a.sign(claims()))
    for kid in ("x1", "x2", "x3"):
        with pytest.raises(UnknownKey):
            await validator.validate(rsa_key(kid).sign(claims()))
    assert jwks_server.hits == 1  # the first fetch was under a minute ago: no refresh


async def test_a_known_kid_with_a_forged_signature_is_refused(
        validator: TokenValidator, rsa_a: Key) -> None:
    impostor = Key("rsa-a", rsa_key("x").private, "RS256")  # claims to be key rsa-a
    with pytest.raises(InvalidSignature):
        await validator.validate(impostor.sign(claims()))
    header, _, signature = rsa_a.sign(claims()).split(".")
    tampered = f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{signature}"
    with pytest.raises(InvalidSignature):
        await validator.validate(tampered)


async def test_an_algorithm_that_does_not_fit_the_key_finds_no_key(
        validator: TokenValidator, rsa_a: Key) -> None:
    header = {"alg": "ES256", "kid": "rsa-a"}  # an EC algorithm naming an RSA key
    with pytest.raises(UnknownKey):
        await validator.validate(unsigned(header, claims(), b"x" * 64))


@pytest.mark.parametrize(("token", "words"), [
    ("", "three dot-separated parts"),
    ("abc", "three dot-separated parts"),
    ("a.b", "three dot-separated parts"),
    ("a.b.c.d.e", "JWE"),
    ("é.b.c", "ASCII"),
    ("a*b.c2Rm.c2Rm", "base64url"),
    (f"{b64(b'not json')}.{b64(b'{}')}.c2ln", "header is not a JSON object"),
    (f"{b64(b'[1]')}.{b64(b'{}')}.c2ln", "header is not a JSON object"),
    (f"{b64(json.dumps({'typ': 'JWT'}).encode())}.{b64(b'{}')}.c2ln", "no algorithm"),
    (b64(b'{"alg":"RS256","alg":"none"}') + "." + b64(b"{}") + ".c2ln",
     "header is not a JSON object"),
    (unsigned({"alg": "RS256", "kid": "rsa-a", "crit": ["exp"]}, {}, b"s"), "critical"),
    (unsigned({"alg": "RS256", "kid": 7}, {}, b"s"), "key id"),
    ("e" * 20_000 + ".a.b", "longer than"),
])
async def test_malformed_tokens_are_refused(validator: TokenValidator, token: str,
                                            words: str) -> None:
    with pytest.raises(MalformedToken) as caught:
        await validator.validate(token)
    assert words in caught.value.description
    assert caught.value.error == "invalid_token"


async def test_duplicate_claims_and_non_object_payloads_are_refused(
        validator: TokenValidator, rsa_a: Key) -> None:
    import jwt

    for payload in (b'{"sub":"alice","sub":"admin"}', b'["sub"]', b"NaN"):
        token = jwt.api_jws.encode(payload, rsa_a.private, algorithm="RS256",
                                   headers={"kid": "rsa-a"})
        with pytest.raises(MalformedToken, match="payload"):
            await validator.validate(token)


async def test_a_required_token_type_is_checked(jwks_server: JwksServer, rsa_a: Key) -> None:
    validator = TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_server.url,
                               token_type="at+jwt")
    assert await validator.validate(rsa_a.sign(claims()))  # typ at+jwt
    with pytest.raises(MalformedToken, match="type"):
        await validator.validate(rsa_a.sign(claims(), typ="JWT"))  # e.g. an ID token


# --------------------------------------------------------------------------- the key set


async def test_jwks_endpoint_down_fails_closed(jwks_server: JwksServer, rsa_a: Key) -> None:
    validator = make_validator(jwks_server)
    jwks_server.stop()
    with pytest.raises(KeySetUnavailable, match="could not be fetched"):
        await validator.validate(rsa_a.sign(claims()))


@pytest.mark.parametrize(("status", "document", "words"), [
    (500, {"keys": []}, "HTTP 500"),
    (302, {"keys": []}, "HTTP 302"),
    (200, b"<html>", "not JSON"),
    (200, {"no": "keys"}, "no 'keys' list"),
    (200, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "no public signing key"),
    (200, {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "use": "enc"}]}, "no public"),
])
async def test_a_broken_key_set_fails_closed(jwks_server: JwksServer, rsa_a: Key, status: int,
                                             document: object, words: str) -> None:
    jwks_server.status, jwks_server.document = status, document
    with pytest.raises(KeySetUnavailable, match=words):
        await make_validator(jwks_server).validate(rsa_a.sign(claims()))


async def test_an_expired_cache_is_not_used_when_the_issuer_is_down(
        jwks_server: JwksServer, rsa_a: Key) -> None:
    now = [1000.0]
    validator = make_validator(jwks_server, ttl=300.0, clock=lambda: now[0])
    await validator.validate(rsa_a.sign(claims()))
    jwks_server.stop()
    now[0] += 100  # still within the ttl: cached keys are used
    assert await validator.validate(rsa_a.sign(claims()))
    now[0] += 250  # past the ttl: the keys must be fetched again, and cannot be
    with pytest.raises(KeySetUnavailable):
        await validator.validate(rsa_a.sign(claims()))
    with pytest.raises(KeySetUnavailable):  # and stays refused, without a new attempt
        await validator.validate(rsa_a.sign(claims()))


async def test_private_keys_in_the_key_set_are_ignored(jwks_server: JwksServer,
                                                      rsa_a: Key) -> None:
    jwks_server.document = {"keys": [{**rsa_a.jwk, "d": "private-part"}]}
    with pytest.raises(KeySetUnavailable, match="no public signing key"):
        await make_validator(jwks_server).validate(rsa_a.sign(claims()))


@pytest.mark.parametrize("url", ["http://issuer.test/jwks", "ftp://issuer.test/jwks",
                                 "https:///jwks"])
def test_the_key_set_must_come_over_https(url: str) -> None:
    with pytest.raises(ConfigError, match="https"):
        JwksClient(url)


async def test_the_validator_is_an_mcp_token_verifier(validator: TokenValidator,
                                                      rsa_a: Key) -> None:
    from mcp.server.auth.provider import AccessToken

    good = await validator.verify_token(rsa_a.sign(claims()))
    assert isinstance(good, AccessToken)
    assert (good.subject, good.client_id, good.resource) == ("alice", "agent-cli", AUDIENCE)
    assert await validator.verify_token(rsa_a.sign(claims(aud="x"))) is None
