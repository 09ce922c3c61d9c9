"""Redaction of secrets before an event reaches any sink.

A secret is replaced by ``redacted:hmac-sha256:<16 hex>``, the start of an HMAC-SHA256 under a
key only the deployment holds, over the canonical JSON of the value. Equal secrets give equal
markers (an investigator can tell that two calls used the same password) but a marker cannot be
brute-forced back to a short secret without the key.

What counts as a secret:

* the value of any key that looks secret, at any depth (lists included): a key containing
  ``password``, ``passwd``, ``passphrase``, ``secret``, ``credential``, ``api_key``/``apiKey``,
  ``private_key``, ``authorization`` or ``cookie``, or having ``token``, ``otp``, ``totp``,
  ``hotp`` or ``code`` as a whole word (``totp_code``, ``accessToken``; not ``max_tokens``);
* the value at any dotted path the policy names (``args.db.dsn``; ``*`` is one key, ``**`` any
  number of keys; lists are transparent);
* any string, anywhere, that matches a secret pattern (:data:`DEFAULT_VALUE_PATTERNS`: bearer
  tokens, AWS access key ids, Slack, GitHub and OpenAI-style tokens, JWTs, PEM private keys).
  The whole string is replaced, so a secret embedded in a longer message cannot leak in part.
"""

from __future__ import annotations

import fnmatch
import functools
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from agentguard.audit._chain import JsonSafe, encode
from agentguard.canonical import CanonicalizationError, canonical_bytes
from agentguard.errors import AuditError, ConfigError

__all__ = [
    "DEFAULT_VALUE_PATTERNS",
    "KEY_BYTES",
    "POLICY_MARK",
    "REDACTED_PREFIX",
    "Redactor",
    "is_secret_key",
    "load_or_create_key",
    "mask_paths",
]

REDACTED_PREFIX = "redacted:hmac-sha256:"
KEY_BYTES = 32

# Each pattern starts with a literal or a character class, never an assertion such as \b:
# that lets the regex engine skip ahead, and keeps the scan of every string value ~5x cheaper.
DEFAULT_VALUE_PATTERNS: tuple[str, ...] = (
    r"[Bb][Ee][Aa][Rr][Ee][Rr]\s+\S+",  # an HTTP bearer credential (scheme in any case)
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"xox[abpr]-[0-9A-Za-z]",  # Slack token
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----",  # PEM private key
    r"gh[pousr]_[A-Za-z0-9]{36}",  # GitHub token
    # OpenAI/Anthropic key; the look-behind sits after the "s" so "task-..." is not one.
    r"s(?<![A-Za-z0-9_-]s)k-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.",  # JSON Web Token
)

_SUBSTRINGS = (
    "password", "passwd", "passphrase", "secret", "credential", "apikey", "privatekey",
    "authorization", "cookie",
)
_WORDS = frozenset({"token", "otp", "totp", "hotp", "code"})
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
_CLEAN_LIMIT = 8192
_CLEAN_MAX_LEN = 256
_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a mapping key looks like it holds a secret (see the module docstring)."""
    words = [w for w in _SEPARATORS.split(_CAMEL.sub(r"\1_\2", name).lower()) if w]
    compact = "".join(words)
    return any(s in compact for s in _SUBSTRINGS) or not _WORDS.isdisjoint(words)


def _source(pattern: str | re.Pattern[str]) -> str:
    if isinstance(pattern, str):
        re.compile(pattern)  # report a bad pattern on its own, not inside the alternation
        return f"(?:{pattern})"
    flags = "".join(c for flag, c in _FLAGS if pattern.flags & flag)
    return f"(?{flags}:{pattern.pattern})" if flags else f"(?:{pattern.pattern})"


def _path_matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_path_matches(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _path_matches(rest, path[1:])


_PLAIN = JsonSafe()

#: What replaces a value the policy's ``redact:`` names, before any sink or channel sees it.
POLICY_MARK = "redacted:policy"


def mask_paths(value: Any, paths: Iterable[str], mark: str = POLICY_MARK) -> Any:
    """A copy of ``value`` with the values at ``paths`` replaced by ``mark``.

    Paths are dotted keys relative to ``value`` (``db.dsn``); ``*`` is one key, ``**`` any
    number of keys, lists are transparent. Unnamed values are shared, not copied.
    """
    patterns = tuple(tuple(p.split(".")) for p in paths)
    if not patterns:
        return value

    def walk(item: Any, path: tuple[str, ...]) -> Any:
        if isinstance(item, Mapping):
            out = {}
            for key, sub in item.items():
                where = (*path, str(key))
                out[key] = mark if any(_path_matches(p, where) for p in patterns) \
                    else walk(sub, where)
            return out
        if isinstance(item, list | tuple):
            return [walk(sub, path) for sub in item]
        return item

    return walk(value, ())


class Redactor(JsonSafe):
    """Copies events into JSON-safe data with every secret replaced by a keyed hash.

    Args:
        key: HMAC key, at least 16 bytes (use :func:`load_or_create_key`).
        patterns: Regular expressions for string values that are secrets wherever they
            appear; the defaults are :data:`DEFAULT_VALUE_PATTERNS`.
        paths: Dotted paths whose values are secret (from the policy), e.g. ``args.dsn``,
            ``args.*.password``, ``**.ssn``.

    Raises:
        ConfigError: the key is too short, or a pattern or path is invalid.
    """

    def __init__(
        self,
        key: bytes,
        *,
        patterns: Iterable[str | re.Pattern[str]] = DEFAULT_VALUE_PATTERNS,
        paths: Iterable[str] = (),
    ) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ConfigError("the redaction key must be at least 16 bytes")
        self._secret = bytes(key)
        if isinstance(patterns, str | re.Pattern):
            patterns = (patterns,)
        if isinstance(paths, str):
            paths = (paths,)
        try:
            sources = [_source(p) for p in patterns]
        except re.error as exc:
            raise ConfigError(f"invalid redaction pattern: {exc}") from exc
        self._rx = re.compile("|".join(sources)) if sources else None
        self._paths = tuple(tuple(p.split(".")) for p in paths)
        if any("" in p for p in self._paths):
            raise ConfigError("redaction paths are dotted key names, e.g. 'args.password'")
        self.track_paths = bool(self._paths)
        super().__init__()

    @classmethod
    def ephemeral(cls) -> Redactor:
        """A redactor with a random key held only by this process (the sinks' default)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def redact(self, value: Any) -> Any:
        """Return a JSON-safe copy of ``value`` with every secret replaced."""
        return self.convert(value)

    def prepare(self, event: Any) -> dict[str, Any]:
        """Check an audit event and return its redacted, JSON-safe copy (what sinks store).

        Raises:
            AuditError: ``event`` is not a mapping with a string ``type``, or copying failed.
        """
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise AuditError("an audit event must be a mapping with a string 'type'")
        try:
            return self.convert(event)
        except Exception as exc:  # e.g. a mapping whose items() raises: refuse, loudly
            raise AuditError(f"cannot prepare the audit event: {exc!r}") from exc

    def mark(self, value: Any) -> str:
        """The marker that replaces ``value``: ``redacted:hmac-sha256:<16 hex>``."""
        if type(value) is str:
            # RFC 8785 writes a string exactly as json.dumps(ensure_ascii=False) does; the
            # shortcut skips the pure-Python encoder (tests check both agree).
            data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        else:
            plain = _PLAIN.convert(value)
            try:
                data = canonical_bytes(plain)
            except CanonicalizationError:  # lone surrogates: RFC 8785 needs valid UTF-8
                data = encode(plain)
        return REDACTED_PREFIX + hmac.digest(self._secret, data, "sha256").hex()[:16]

    def _text(self, text: str) -> str:
        if self._rx is not None and self._rx.search(text):
            return self.mark(text)
        if len(text) <= _CLEAN_MAX_LEN:
            if len(self._clean) >= _CLEAN_LIMIT:
                self._clean.clear()  # unique ids fill it; start over so hot strings return
            self._clean.add(text)
        return text

    def _classify(self, key: str) -> tuple[str, bool]:
        return self._text(key), is_secret_key(key)

    def _hide_path(self, path: tuple[str, ...]) -> bool:
        return any(_path_matches(p, path) for p in self._paths)

    def _hidden(self, value: Any) -> Any:
        return self.mark(value)


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """Read the redaction key at ``path``, creating a random 32-byte one (mode 0600) if absent.

    Creation is atomic (written aside, then hard-linked into place), so processes racing to
    create the key all end up with the same one.

    Raises:
        ConfigError: the file cannot be read or created, is not 32 bytes, or is readable or
            writable by group or others.
    """
    target = os.fspath(path)
    for _ in range(3):
        try:
            return _read_key(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot read the audit redaction key {target}: {exc}") from exc
        try:
            _create_key(target)
        except OSError as exc:
            raise ConfigError(f"cannot create the audit redaction key {target}: {exc}") from exc
    raise ConfigError(f"the audit redaction key {target} keeps disappearing")


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the audit redaction key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"the audit redaction key {path} is accessible to group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise ConfigError(f"the audit redaction key {path} is not {KEY_BYTES} bytes")
    return data


def _create_key(path: str) -> None:
    aside = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another process created it first; everyone reads that one
    finally:
        os.unlink(aside)
