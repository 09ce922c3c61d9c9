"""OpenTelemetry export of audit records: a span per record, beside the real audit log.

:class:`OTelAuditSink` wraps any :class:`~agentguard.audit.base.AuditSink`. The inner sink
writes first and its failure is raised (the guard then refuses privileged calls, as
always); only then is one span emitted, named ``agentguard <type>`` and carrying the stored
(redacted) record as ``agentguard.<field>`` attributes. Telemetry is best effort: a
failing tracer, processor or exporter is logged and never breaks a call.

Needs ``opentelemetry-api`` (a dependency of ``mcp``); install ``agentguard[otel]`` for the
SDK and exporters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from typing import Any

from agentguard.audit._group import AuditLedger
from agentguard.audit.base import AuditSink
from agentguard.errors import ConfigError

__all__ = ["ARG_FIELDS", "OTelAuditSink", "span_attributes"]

logger = logging.getLogger(__name__)

#: Record fields holding tool arguments: left out of spans unless ``include_args``.
ARG_FIELDS = frozenset({"args", "new_args"})
_MAX_ARGS_CHARS = 4096
_INT64 = 2**63


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


def span_attributes(record: Mapping[str, Any], *, include_args: bool = False,
                    prefix: str = "agentguard.") -> dict[str, Any]:
    """An audit record as span attributes.

    Scalars stay as they are, lists become string arrays, mappings become JSON text,
    ``None`` is left out, and argument fields are left out unless ``include_args`` (then
    as JSON text, cut at 4096 characters).
    """
    attrs: dict[str, Any] = {}
    for key, value in record.items():
        if value is None:
            continue
        name = prefix + str(key)
        if key in ARG_FIELDS:
            if include_args:
                text = _scalar(value) if not isinstance(value, str) else value
                attrs[name] = text if len(text) <= _MAX_ARGS_CHARS else (
                    text[:_MAX_ARGS_CHARS] + "...[truncated]")
            continue
        if isinstance(value, list | tuple | set | frozenset):
            items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
            attrs[name] = [v if isinstance(v, str) else str(_scalar(v)) for v in items]
        else:
            attrs[name] = _scalar(value)
    return attrs


class OTelAuditSink:
    """An :class:`~agentguard.audit.base.AuditSink` that also emits a span per record.

    Args:
        inner: The audit sink that keeps the record (JSONL, PostgreSQL...). It is written
            first; if it raises, this sink raises and emits nothing (fail closed).
        tracer_provider: Where spans go; the global provider by default.
        include_args: Put the (sink-redacted) tool arguments on spans as
            ``agentguard.args``. Off by default: arguments may hold personal data that
            belongs in the audit log, not in a tracing backend.
        types: Record types to emit spans for (default: every record).

    Raises:
        ConfigError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, inner: AuditSink, tracer_provider: Any = None, *,
                 include_args: bool = False, types: Collection[str] | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - mcp depends on opentelemetry-api
            raise ConfigError(
                "OpenTelemetry export needs opentelemetry: pip install 'agentguard[otel]'"
            ) from exc
        from agentguard import __version__

        self.inner = inner
        self.include_args = include_args
        self.types = frozenset(types) if types is not None else None
        self._trace = trace
        self._tracer = trace.get_tracer("agentguard", __version__,
                                        tracer_provider=tracer_provider)

    def append(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Write ``event`` to the inner sink, then emit its span (best effort).

        Raises:
            AuditError: the inner sink failed (whatever it raised is re-raised).
        """
        record = self.inner.append(event)
        self._emit_quietly(record)
        return record

    def _emit_quietly(self, record: Mapping[str, Any]) -> None:
        try:
            self._emit(record)
        except Exception as exc:  # telemetry must never refuse or break a call
            logger.warning("OpenTelemetry export of audit record %s failed: %s: %s",
                           record.get("seq"), type(exc).__name__, exc)

    def submit(self, event: Mapping[str, Any], ledger: AuditLedger) -> None:
        """Queue ``event`` in the inner sink's group commit; its span follows once it is
        durable. An inner sink without group commit is written synchronously.

        Raises:
            AuditError: the inner sink refused or failed the record.
        """
        submit = getattr(self.inner, "submit", None)
        if submit is None:
            self.append(event)
            return
        submit(event, ledger, written=self._emit_quietly)

    async def append_async(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Group-commit ``event`` in the inner sink (synchronously if it cannot), then emit."""
        append_async = getattr(self.inner, "append_async", None)
        if append_async is None:
            return self.append(event)
        record = await append_async(event)
        self._emit_quietly(record)
        return record

    def close(self) -> None:
        """Close the inner sink (the tracer provider belongs to the application)."""
        self.inner.close()

    def _emit(self, record: Mapping[str, Any]) -> None:
        kind = str(record.get("type", "event"))
        if self.types is not None and kind not in self.types:
            return
        span = self._tracer.start_span(
            f"agentguard {kind}", kind=self._trace.SpanKind.INTERNAL,
            attributes=span_attributes(record, include_args=self.include_args))
        try:
            if record.get("error"):
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                                   str(record.get("reason", ""))[:256]))
        finally:
            span.end()
