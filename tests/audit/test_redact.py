"""Redaction: secrets are replaced by keyed hashes before any sink, at any depth."""

from __future__ import annotations

import dataclasses
import enum
import json
import multiprocessing
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.audit import (
    JsonlAuditLog,
    MemoryAuditLog,
    Redactor,
    is_secret_key,
    load_or_create_key,
    verify_log,
    verify_records,
)
from agentguard.canonical import canonical_bytes
from agentguard.errors import AuditError, ConfigError
from tests.audit.helpers import KEY, event

MARKER = re.compile(r"redacted:hmac-sha256:[0-9a-f]{16}")
SECRETS = {
    "password": "hunter2-correct-horse",
    "token": "tok-4f8e2a9c",
    "totp": "492039",
    "bearer": "Bearer eyJhbGciOi.abc.def",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-1234-5678-abcdefghijkl",
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----",
}


@pytest.mark.parametrize("name", [
    "password", "db_password", "PASSWORD", "passwd", "client_secret", "secretKey", "token",
    "access_token", "accessToken", "refresh-token", "api_key", "apiKey", "x-api-key",
    "APIKEY", "Authorization", "credential", "credentials", "private_key", "privateKey",
    "otp", "totp_code", "code", "auth_code", "Cookie", "passphrase",
])
def test_secret_looking_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", [
    "path", "tool", "reason", "max_tokens", "footprint", "barcode", "encoding", "session_id",
    "principal", "labels", "author", "decode_mode",
])
def test_ordinary_keys(name: str) -> None:
    assert not is_secret_key(name)


def test_secret_keys_are_redacted_at_any_depth_including_lists() -> None:
    redactor = Redactor(KEY)
    data = {
        "type": "x",
        "args": {
            "user": "alice",
            "auth": {"Password": "p1", "nested": [{"api_key": "k1"}, {"ok": 1, "otp": 123456}]},
            "headers": [["Authorization", "Basic Zm9v"], {"Authorization": ["list", "too"]}],
            "config": {"credentials": {"user": "u", "pass": "p"}},
        },
    }
    out = redactor.redact(data)
    args = out["args"]
    assert args["user"] == "alice"
    assert MARKER.fullmatch(args["auth"]["Password"])
    assert MARKER.fullmatch(args["auth"]["nested"][0]["api_key"])
    assert args["auth"]["nested"][1] == {"ok": 1, "otp": args["auth"]["nested"][1]["otp"]}
    assert MARKER.fullmatch(args["auth"]["nested"][1]["otp"])
    assert args["headers"][0] == ["Authorization", "Basic Zm9v"]  # a value, not a key
    assert MARKER.fullmatch(args["headers"][1]["Authorization"])
    assert MARKER.fullmatch(args["config"]["credentials"])  # the whole subtree goes
    assert data["args"]["auth"]["Password"] == "p1"  # the caller's event is not modified


@pytest.mark.parametrize("name", sorted(set(SECRETS) - {"password", "token", "totp"}))
def test_secret_looking_values_are_redacted_anywhere(name: str) -> None:
    out = Redactor(KEY).redact({"type": "x", "args": {"note": ["ok", {"text": SECRETS[name]}]}})
    assert MARKER.fullmatch(out["args"]["note"][1]["text"])


@pytest.mark.parametrize("text", [
    "an ordinary sentence", "task-abcdefghijklmnopqrstuvwxyz", "AKIA-short", "prod/db/password",
])
def test_ordinary_values_are_kept(text: str) -> None:
    assert Redactor(KEY).redact({"v": text}) == {"v": text}


def test_paths_named_by_the_policy_are_redacted() -> None:
    redactor = Redactor(KEY, paths=["args.dsn", "args.*.ssn", "**.pin"])
    out = redactor.redact({
        "dsn": "top-level is not args.dsn",
        "args": {"dsn": "postgres://u:p@db/x", "people": [{"ssn": "1"}], "a": {"b": {"pin": 7}}},
    })
    assert out["dsn"] == "top-level is not args.dsn"
    assert MARKER.fullmatch(out["args"]["dsn"])
    assert MARKER.fullmatch(out["args"]["people"][0]["ssn"])
    assert MARKER.fullmatch(out["args"]["a"]["b"]["pin"])


def test_equal_secrets_correlate_only_under_the_same_key() -> None:
    one, two = Redactor(KEY), Redactor(b"another-key-another-key-another!")
    a = one.redact({"password": "s3cret"})["password"]
    assert a == one.redact({"nested": {"password": "s3cret"}})["nested"]["password"]
    assert a != one.redact({"password": "s3cret!"})["password"]
    assert a != two.redact({"password": "s3cret"})["password"]


@given(st.text())
def test_string_marker_uses_the_canonical_encoding(text: str) -> None:
    """mark() encodes strings without the pure-Python JCS encoder; it must agree with it."""
    import hashlib
    import hmac

    try:
        canonical = canonical_bytes(text)
    except ValueError:  # lone surrogates are not canonical JSON; anything stable will do
        return
    expected = hmac.new(KEY, canonical, hashlib.sha256).hexdigest()[:16]
    assert Redactor(KEY).mark(text) == f"redacted:hmac-sha256:{expected}"


def test_secrets_never_reach_the_file(log_path: Path) -> None:
    with JsonlAuditLog(log_path, redactor=Redactor(KEY)) as log:
        log.append(event(1, args={
            "password": SECRETS["password"], "deep": [[{"token": SECRETS["token"]}]],
            "code": SECRETS["totp"], "header": SECRETS["bearer"], "key": SECRETS["aws"],
            "note": f"slack says {SECRETS['slack']}", "pem": SECRETS["pem"],
        }))
        log.append({"type": "reauth.failed", "code": SECRETS["totp"]})
    data = log_path.read_bytes()
    for secret in SECRETS.values():
        assert secret.encode() not in data
        assert json.dumps(secret).encode() not in data
    assert b"492039" not in data
    assert verify_log(log_path).ok


def test_default_sink_redactor_still_redacts(log_path: Path) -> None:
    with JsonlAuditLog(log_path) as log:
        log.append(event(1, args={"password": SECRETS["password"]}))
    assert SECRETS["password"].encode() not in log_path.read_bytes()


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Thing:
    name: str
    token: str


def test_values_that_are_not_json_become_strings_instead_of_crashing() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    log = MemoryAuditLog(redactor=Redactor(KEY))
    record = log.append({
        "type": "call.denied",
        "nan": float("nan"), "inf": float("-inf"), "big": 2**64, "set": {3, 1, 2},
        "bytes": b"\x00raw", "enum": Colour.RED, "thing": Thing("n", "t0k3n"),
        "tuple": (1, 2), 7: "int key", "cyclic": cyclic, "obj": object(),
    })
    assert record["nan"] == "nan" and record["inf"] == "-inf"
    assert record["big"] == str(2**64)
    assert record["set"] == [1, 2, 3] and record["tuple"] == [1, 2]
    assert record["7"] == "int key"
    assert record["thing"]["name"] == "n" and MARKER.fullmatch(record["thing"]["token"])
    assert isinstance(record["bytes"], str) and isinstance(record["enum"], str)
    assert "nested deeper" in json.dumps(record["cyclic"])
    assert verify_records(log.events).ok


def test_redactor_rejects_a_short_key_and_bad_config() -> None:
    with pytest.raises(ConfigError):
        Redactor(b"short")
    with pytest.raises(ConfigError):
        Redactor(KEY, patterns=["(unclosed"])
    with pytest.raises(ConfigError):
        Redactor(KEY, paths=["args..x"])


def test_custom_patterns_replace_the_defaults() -> None:
    redactor = Redactor(KEY, patterns=[re.compile(r"ssn-\d+", re.IGNORECASE)])
    out = redactor.redact({"a": "SSN-123", "b": SECRETS["aws"]})
    assert MARKER.fullmatch(out["a"]) and out["b"] == SECRETS["aws"]


def test_a_mapping_that_fails_to_copy_is_an_audit_error() -> None:
    class Broken(dict):
        def items(self):  # type: ignore[override]
            raise RuntimeError("boom")

    with pytest.raises(AuditError, match="boom"):
        MemoryAuditLog().append({"type": "x", "args": Broken(a=1)})


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]  # no temporary left


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_key_file_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"too short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_or_create_key(path)


def _create_key(path: str) -> bytes:
    return load_or_create_key(path)


def test_processes_racing_to_create_the_key_agree(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.key")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_create_key, [path] * 8)
    assert len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["audit.key"]
