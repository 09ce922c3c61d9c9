"""Signed checkpoints: anchors of the audit chain that the log's writer cannot forge alone.

The agent writes the audit log through its own guard, so it can cut the tail, rewrite the
head file, or wipe everything and start a chain that verifies clean. A *checkpoint* is a
statement "the chain whose first record hashes to F had record S with hash H", signed by a
service key the trust file lists (``agentguard serve``'s key, held by another OS user):
``agentguard audit checkpoint --key serve.key`` writes one, into the log and/or to a file the
agent cannot write (``--out``), e.g. from a timer running as the serve user.

``audit verify --trust FILE [--checkpoints OUT]`` then checks every checkpoint's signature and
uses the good ones as anchors (like ``--expect SEQ:HASH``): a record a checkpoint names must
still be there with that hash. A cut below a checkpoint kept in ``OUT`` is reported
``truncated``, a rewritten record ``anchor_mismatch``; a checkpoint of another chain (the log
was wiped or replaced without ``audit rotate``) is ``foreign_checkpoint``; a forged or
unlisted signature ``checkpoint_invalid``.

The signed bytes are ``b"agentguard-checkpoint-v1\\n"`` + RFC 8785 JSON of
:class:`Checkpoint`'s fields: a different domain from votes, so no vote is a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentguard.canonical import canonical_bytes
from agentguard.errors import AuditError
from agentguard.trust import TrustAnchors
from agentguard.trust.keys import key_id

__all__ = [
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_EVENT",
    "Checkpoint",
    "SignedCheckpoint",
    "append_checkpoint_file",
    "new_checkpoint",
    "read_checkpoint_file",
    "sign_checkpoint",
    "verify_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_DOMAIN = b"agentguard-checkpoint-v1\n"
#: Type of the audit record that carries a checkpoint inside the log.
CHECKPOINT_EVENT = "audit.checkpoint"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_FILE_LINE = 8192


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint states.

    Attributes:
        first: Hash of record 1 of the chain (which chain this is).
        seq: The record anchored.
        hash: Its hash.
        at: Unix seconds the checkpoint was signed.
    """

    first: str
    seq: int
    hash: str
    at: int

    def __post_init__(self) -> None:
        for name in ("first", "hash"):
            value = getattr(self, name)
            if type(value) is not str or not _HEX64.fullmatch(value):
                raise ValueError(f"checkpoint {name} must be 64 lower-case hex digits")
        for name in ("seq", "at"):
            value = getattr(self, name)
            if type(value) is not int or value < (1 if name == "seq" else 0):
                raise ValueError(f"checkpoint {name} must be a positive integer")

    def to_bytes(self) -> bytes:
        """The bytes a service key signs."""
        return CHECKPOINT_DOMAIN + canonical_bytes({f.name: getattr(self, f.name)
                                                    for f in fields(self)})


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the id of the key that signed it and the signature."""

    checkpoint: Checkpoint
    key_id: str
    signature_b64: str

    def to_dict(self) -> dict[str, Any]:
        """JSON data (a line of a checkpoint file; ``checkpoint`` of an audit record)."""
        c = self.checkpoint
        return {"first": c.first, "seq": c.seq, "hash": c.hash, "at": c.at,
                "key_id": self.key_id, "signature": self.signature_b64}

    @classmethod
    def from_dict(cls, data: Any) -> SignedCheckpoint:
        """Read :meth:`to_dict`'s data (untrusted).

        Raises:
            ValueError: a field is missing, unknown or malformed.
        """
        names = {"first", "seq", "hash", "at", "key_id", "signature"}
        if not isinstance(data, Mapping) or set(data) != names:
            raise ValueError(f"a signed checkpoint has exactly: {', '.join(sorted(names))}")
        kid, signature = data["key_id"], data["signature"]
        if type(kid) is not str or not _KEY_ID.fullmatch(kid):
            raise ValueError("key_id must be 16 lower-case hex digits")
        if type(signature) is not str or len(signature) > 200:
            raise ValueError("signature must be base64 text")
        checkpoint = Checkpoint(data["first"], data["seq"], data["hash"], data["at"])
        return cls(checkpoint, kid, signature)


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> SignedCheckpoint:
    """Sign ``checkpoint`` with a service key."""
    signature = base64.b64encode(key.sign(checkpoint.to_bytes())).decode("ascii")
    return SignedCheckpoint(checkpoint, key_id(key.public_key()), signature)


def verify_checkpoint(signed: SignedCheckpoint, anchors: TrustAnchors) -> str | None:
    """Why ``signed`` is not a checkpoint by a service the trust file lists, or None.

    Only service keys sign checkpoints: a person's key proves a vote, and the point of a
    checkpoint is a key held by another OS user than the log's writer.
    """
    if type(signed) is not SignedCheckpoint or type(signed.checkpoint) is not Checkpoint:
        return "not a signed checkpoint"
    binding = anchors.key(signed.key_id)
    if binding is None or binding.service is None:
        return f"key {signed.key_id!r} is not a service key in the trust file {anchors.source}"
    try:
        raw = base64.b64decode(signed.signature_b64, validate=True)
        binding.public_key.verify(raw, signed.checkpoint.to_bytes())
    except (binascii.Error, ValueError, InvalidSignature):
        return f"the signature does not verify with service key {signed.key_id}"
    return None


def new_checkpoint(first: str, seq: int, digest: str) -> Checkpoint:
    """A checkpoint of record ``seq`` (hash ``digest``) of the chain starting at ``first``,
    stamped now."""
    return Checkpoint(first=first, seq=seq, hash=digest, at=int(time.time()))


def append_checkpoint_file(path: str | os.PathLike[str], signed: SignedCheckpoint) -> None:
    """Append one checkpoint as a JSON line (file created 0644: checkpoints are public)."""
    line = json.dumps(signed.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise AuditError(f"cannot write checkpoint file {path}: {exc}") from exc


def read_checkpoint_file(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, SignedCheckpoint | str]]:
    """Yield ``(line number, checkpoint or why the line is not one)`` for a checkpoint file.

    Raises:
        AuditError: the file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if len(raw) > _MAX_FILE_LINE:
                    yield number, "line too long"
                    continue
                try:
                    yield number, SignedCheckpoint.from_dict(json.loads(raw))
                except ValueError as exc:
                    yield number, str(exc)
    except OSError as exc:
        raise AuditError(f"cannot read checkpoint file {path}: {exc}") from exc


def write_checkpoint(
    path: str | os.PathLike[str], key: Ed25519PrivateKey, *, into_log: bool = True,
    out: str | os.PathLike[str] | None = None,
) -> SignedCheckpoint:
    """Verify the log, sign a checkpoint of its last record, and record it.

    Args:
        path: The JSONL log.
        key: The service key (``agentguard serve --service-key``), listed under ``services``
            in the trust file.
        into_log: Append an ``audit.checkpoint`` record to the log (catches a rewrite below
            it; a cut takes it away, which is what ``out`` is for).
        out: Also append it to this file, one JSON line each: keep it where the agent cannot
            write (the serve user's directory, another host).

    Raises:
        AuditError: the log does not verify (a broken chain is not signed), or a write failed.
    """
    from agentguard.audit.jsonl import JsonlAuditLog
    from agentguard.audit.lifecycle import first_record
    from agentguard.audit.verify import verify_log

    if not into_log and out is None:
        raise AuditError("a checkpoint must go into the log, to a file, or both")
    report = verify_log(path)
    first = first_record(path)
    if not report.ok or not report.last_seq or first is None:
        kinds = sorted({p.kind for p in report.problems}) or ["empty"]
        raise AuditError(f"audit log {os.fspath(path)} does not verify ({', '.join(kinds)}): "
                         "not signing a checkpoint of it")
    signed = sign_checkpoint(new_checkpoint(first["hash"], report.last_seq, report.last_hash),
                             key)
    if out is not None:
        append_checkpoint_file(out, signed)
    if into_log:
        with JsonlAuditLog(path) as log:
            log.append({"type": CHECKPOINT_EVENT, "checkpoint": signed.to_dict()})
    return signed
