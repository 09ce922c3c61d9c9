"""OpenTelemetry export: one span per audit record, carrying the record; fail closed on the
audit log, never on telemetry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentguard import Guard, Policy
from agentguard.audit import JsonlAuditLog, MemoryAuditLog, Redactor, read_events
from agentguard.audit.otel import OTelAuditSink, span_attributes
from agentguard.errors import AuditError
from agentguard.types import Principal, ToolCall
from tests.audit.helpers import KEY, event

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 5s, log_allows: true}
rules:
  - id: no-drops
    match: {tool: drop_db}
    class: destructive
    labels: [data, prod]
    require: deny
  - id: reads
    match: {tool: read_file}
    class: read
"""


def provider_with(*processors: SpanProcessor) -> TracerProvider:
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def test_one_span_per_audit_record_with_its_fields(
        tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    log = JsonlAuditLog(tmp_path / "audit.jsonl", redactor=Redactor(KEY))
    sink = OTelAuditSink(log, provider_with(SimpleSpanProcessor(exporter)))
    async with Guard(Policy.from_yaml(POLICY), audit=sink) as guard:
        for tool in ("drop_db", "read_file"):
            await guard.authorize(ToolCall(tool=tool, args={"name": "orders"},
                                           principal=Principal("agent:ops")))
    sink.close()
    records = list(read_events(tmp_path / "audit.jsonl"))
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"agentguard {r['type']}" for r in records] == [
        "agentguard call.denied", "agentguard call.allowed"]
    denied = dict(spans[0].attributes or {})
    assert denied["agentguard.rule_id"] == "no-drops"
    assert denied["agentguard.outcome"] == "denied"
    assert denied["agentguard.privilege"] == "destructive"
    assert denied["agentguard.labels"] == ("data", "prod")  # lists: string arrays
    assert denied["agentguard.principal"] == "agent:ops"
    assert (denied["agentguard.seq"], denied["agentguard.hash"]) == (
        records[0]["seq"], records[0]["hash"])  # points at the tamper-evident record
    assert "agentguard.args" not in denied
    for record, span in zip(records, spans, strict=True):
        expected = {f"agentguard.{k}" for k, v in record.items() if v is not None} - {
            "agentguard.args"}
        assert set(span.attributes or {}) == expected


def test_arguments_go_out_only_when_asked_and_only_redacted(
        exporter: InMemorySpanExporter) -> None:
    sink = OTelAuditSink(MemoryAuditLog(redactor=Redactor(KEY)),
                         provider_with(SimpleSpanProcessor(exporter)), include_args=True)
    sink.append(event(1, args={"path": "prod/db", "password": "hunter2"}))
    (span,) = exporter.get_finished_spans()
    args = (span.attributes or {})["agentguard.args"]
    assert "prod/db" in args and "hunter2" not in args


def test_an_inner_sink_failure_raises_and_emits_nothing(
        exporter: InMemorySpanExporter) -> None:
    inner = MemoryAuditLog()
    inner.close()
    sink = OTelAuditSink(inner, provider_with(SimpleSpanProcessor(exporter)))
    with pytest.raises(AuditError):
        sink.append(event(1))
    assert exporter.get_finished_spans() == ()


class BrokenExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector unreachable")


class BrokenProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor bug")


@pytest.mark.parametrize("processor", [SimpleSpanProcessor(BrokenExporter()),
                                       BrokenProcessor()])
def test_telemetry_failures_never_break_the_audit_or_the_call(
        processor: SpanProcessor, caplog: pytest.LogCaptureFixture) -> None:
    inner = MemoryAuditLog()
    sink = OTelAuditSink(inner, provider_with(processor))
    with caplog.at_level(logging.WARNING):
        record = sink.append(event(1))
        sink.append(event(2))
    assert record["seq"] == 1 and [e["seq"] for e in inner.events] == [1, 2]
    assert caplog.records  # the failure is reported, not swallowed silently


async def test_a_failing_exporter_does_not_refuse_calls_through_the_guard() -> None:
    sink = OTelAuditSink(MemoryAuditLog(), provider_with(BrokenProcessor()))
    async with Guard(Policy.from_yaml(POLICY), audit=sink) as guard:
        auth = await guard.authorize(ToolCall(tool="read_file", args={"path": "a"}))
    assert auth.outcome == "allowed"


def test_audit_spans_join_the_current_trace(exporter: InMemorySpanExporter) -> None:
    provider = provider_with(SimpleSpanProcessor(exporter))
    sink = OTelAuditSink(MemoryAuditLog(), provider)
    with provider.get_tracer("edge").start_as_current_span("tools/call") as parent:
        sink.append(event(1))
    audit_span = next(s for s in exporter.get_finished_spans() if s.name.startswith("agentguard"))
    assert audit_span.parent is not None
    assert audit_span.parent.span_id == parent.get_span_context().span_id


def test_a_type_filter_limits_the_spans(exporter: InMemorySpanExporter) -> None:
    sink = OTelAuditSink(MemoryAuditLog(), provider_with(SimpleSpanProcessor(exporter)),
                         types={"call.denied"})
    sink.append(event(1))
    sink.append(event(2, type="call.denied"))
    assert [s.name for s in exporter.get_finished_spans()] == ["agentguard call.denied"]


def test_failed_closed_records_are_marked_as_errors(exporter: InMemorySpanExporter) -> None:
    from opentelemetry.trace import StatusCode

    sink = OTelAuditSink(MemoryAuditLog(), provider_with(SimpleSpanProcessor(exporter)))
    sink.append(event(1, type="call.denied", error="StoreError", reason="failed closed"))
    sink.append(event(2, type="call.denied"))
    first, second = exporter.get_finished_spans()
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


def test_span_attributes_shapes() -> None:
    attrs = span_attributes({
        "type": "x", "none": None, "n": 3, "f": 1.5, "b": False, "big": 2**70,
        "list": [1, "a", {"k": 1}], "map": {"b": 1, "a": [2]}, "args": {"secret": "s"},
        "new_args": {"x": 1},
    })
    assert attrs == {
        "agentguard.type": "x", "agentguard.n": 3, "agentguard.f": 1.5, "agentguard.b": False,
        "agentguard.big": str(2**70), "agentguard.list": ["1", "a", '{"k": 1}'],
        "agentguard.map": '{"a": [2], "b": 1}',
    }
    long = span_attributes({"args": {"v": "x" * 10_000}}, include_args=True)["agentguard.args"]
    assert len(long) < 4200 and long.endswith("...[truncated]")


def test_close_closes_the_inner_sink() -> None:
    inner = MemoryAuditLog()
    OTelAuditSink(inner).close()
    with pytest.raises(AuditError):
        inner.append(event(1))


async def test_group_commit_passes_through_and_spans_follow_durable_records(
        tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    from agentguard.audit import AuditLedger, GroupCommitSink

    log = JsonlAuditLog(tmp_path / "audit.jsonl", redactor=Redactor(KEY))
    sink = OTelAuditSink(log, provider_with(SimpleSpanProcessor(exporter)))
    assert isinstance(sink, GroupCommitSink)
    ledger = AuditLedger()
    for i in range(5):
        sink.submit(event(i), ledger)
    await ledger.durable()
    record = await sink.append_async(event(5))
    sink.close()
    spans = exporter.get_finished_spans()
    assert sorted(dict(s.attributes or {})["agentguard.seq"] for s in spans) == [1, 2, 3, 4, 5, 6]
    assert record["seq"] == 6
