import asyncio
import json
import os
import struct
from datetime import UTC, datetime, timedelta

import cramjam
import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core import otlpjson
from collector.core.component import Kind, Shared
from collector.core.consumer import RetryableError
from collector.core.pdata import REQUEST_TYPES, Traces, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.exporters import file
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings


def make_exporter(
    config: dict,
    signal: Signal = Signal.TRACES,
    id: str = "file",
    telemetry: Telemetry | None = None,
    shared: Shared | None = None,
) -> file.FileExporter:
    settings = make_settings(Kind.EXPORTER, id, telemetry=telemetry, shared=shared)
    return file.FileExporter(settings, file.Config.model_validate(config), signal)


def read_lines(path, request_type=Traces) -> list:
    return [otlpjson.parse(line, request_type) for line in path.read_text().splitlines()]


def rich_traces() -> Traces:
    batch = make_traces(
        3,
        resource={"service.name": "checkout", "cloud.region": "eu-west-1"},
        attributes={
            "http.route": "/items/{id}",
            "retries": 2,
            "ok": True,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "nested": {"k": 1},
        },
        error=True,
        parent_span_id=b"\x01" * 8,
    )
    rs = batch.resource_spans[0]
    rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    rs.scope_spans[0].scope.version = "1.2.3"
    span = rs.scope_spans[0].spans[0]
    span.trace_state = "vendor=1"
    span.kind = Span.SPAN_KIND_CLIENT
    event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano + 5)
    set_attr(event.attributes, "exception.type", "ValueError")
    link = span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8), trace_state="x=y")
    set_attr(link.attributes, "link.kind", "follows")
    return batch


SIGNAL_KEYS = {
    "resourceSpans": Signal.TRACES,
    "resourceMetrics": Signal.METRICS,
    "resourceLogs": Signal.LOGS,
}


async def test_every_signal_round_trips(tmp_path):
    path = tmp_path / "out" / "telemetry.jsonl"
    sent = {
        Signal.TRACES: [rich_traces(), make_traces(2)],
        Signal.METRICS: [make_metrics(4)],
        Signal.LOGS: [make_logs(3)],
    }
    telemetry = Telemetry()
    exporters = {s: make_exporter({"path": str(path)}, s, telemetry=telemetry) for s in sent}
    for exporter in exporters.values():
        await exporter.start(StaticHost())
    for signal, batches in sent.items():
        for batch in batches:
            await exporters[signal].consume(batch)
    for exporter in exporters.values():
        await exporter.shutdown()

    received = {s: [] for s in Signal}
    for line in path.read_text().splitlines():
        signal = SIGNAL_KEYS[next(iter(json.loads(line)))]
        received[signal].append(otlpjson.parse(line, REQUEST_TYPES[signal]))
    assert received == sent
    sample = telemetry.registry.get_sample_value
    assert sample("otelcol_exporter_sent_spans_total", {"exporter": "file"}) == 5
    assert sample("otelcol_exporter_sent_metric_points_total", {"exporter": "file"}) == 4
    assert sample("otelcol_exporter_sent_log_records_total", {"exporter": "file"}) == 3


def frames(path) -> list[bytes]:
    """The records of a file of length-prefixed (4-byte big-endian) records."""
    data, records = path.read_bytes(), []
    while data:
        (size,) = struct.unpack(">I", data[:4])
        records.append(data[4 : 4 + size])
        data = data[4 + size :]
    return records


async def write_all(config: dict, batches: list) -> None:
    exporter = make_exporter(config)
    await exporter.start(StaticHost())
    for batch in batches:
        await exporter.consume(batch)
    await exporter.shutdown()


async def test_proto_format_writes_length_prefixed_messages(tmp_path):
    path = tmp_path / "out.binpb"
    sent = [rich_traces(), make_traces(1)]
    await write_all({"path": str(path), "format": "proto"}, sent)
    assert [Traces.FromString(frame) for frame in frames(path)] == sent


@pytest.mark.parametrize("format_", ["json", "proto"])
async def test_zstd_writes_each_request_as_a_length_prefixed_zstd_frame(tmp_path, format_):
    path = tmp_path / "out.zst"
    sent = [rich_traces(), make_traces(1)]
    await write_all({"path": str(path), "format": format_, "compression": "zstd"}, sent)
    received = []
    for frame in frames(path):
        assert frame[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic number
        payload = bytes(cramjam.zstd.decompress(frame))
        proto = format_ == "proto"
        received.append(Traces.FromString(payload) if proto else otlpjson.parse(payload, Traces))
    assert received == sent


async def test_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "out.jsonl"
    first, second = make_traces(1), make_traces(1)
    for batch in (first, second):
        exporter = make_exporter({"path": str(path)})
        await exporter.start(StaticHost())
        await exporter.consume(batch)
        await exporter.shutdown()
    assert read_lines(path) == [first, second]


def big_batch(index: int) -> Traces:
    """About 0.4 MiB on one line, so a 1 MiB file holds two of them."""
    return make_traces(1, attributes={"batch": index, "blob": "x" * 400_000})


def backups(path) -> list:
    return sorted(p for p in path.parent.iterdir() if p != path)


async def write_big_batches(path, rotation: dict, count: int) -> None:
    exporter = make_exporter({"path": str(path), "rotation": rotation})
    await exporter.start(StaticHost())
    for i in range(count):
        await exporter.consume(big_batch(i))
    await exporter.shutdown()


def batch_numbers(path) -> list[int]:
    return [
        int(t.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.int_value)
        for t in read_lines(path)
    ]


async def test_rotates_by_size_and_keeps_max_backups(tmp_path):
    path = tmp_path / "spans.json"
    await write_big_batches(path, {"max_megabytes": 1, "max_backups": 2}, count=10)

    old = backups(path)
    assert [p.name[:6] for p in old] == ["spans-", "spans-"]
    assert all(p.suffix == ".json" for p in old)
    # Two batches per file: five files were written, the two newest backups survive.
    assert [batch_numbers(p) for p in [*old, path]] == [[4, 5], [6, 7], [8, 9]]
    assert all(p.stat().st_size <= 1024 * 1024 for p in [*old, path])


async def test_zero_max_backups_keeps_every_file(tmp_path):
    path = tmp_path / "spans.json"
    await write_big_batches(path, {"max_megabytes": 1, "max_backups": 0}, count=10)
    assert [batch_numbers(p) for p in [*backups(path), path]] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8, 9],
    ]


async def test_max_days_removes_old_backups_and_ignores_other_files(tmp_path):
    path = tmp_path / "spans.json"
    stale = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H-%M-%S.000")
    (tmp_path / f"spans-{stale}.json").write_text("old\n")
    (tmp_path / "spans-notes.json").write_text("not a backup\n")
    await write_big_batches(path, {"max_megabytes": 1, "max_days": 2}, count=3)

    names = [p.name for p in backups(path)]
    assert f"spans-{stale}.json" not in names
    assert "spans-notes.json" in names
    assert len(names) == 2


async def test_signals_and_components_share_one_writer(tmp_path):
    path = tmp_path / "all.jsonl"
    config = {"path": str(path), "rotation": {"max_megabytes": 1, "max_backups": 0}}
    signals = [*Signal, Signal.TRACES]
    shared = Shared()
    exporters = [make_exporter(config, s, shared=shared) for s in Signal]
    other = {**config, "path": str(tmp_path / "." / "all.jsonl")}
    exporters.append(make_exporter(other, id="file/other", shared=shared))
    for exporter in exporters:
        await exporter.start(StaticHost())
    assert len({id(e._writer) for e in exporters}) == 1

    # About 0.3 MiB per line, three lines per file: writers of their own would each rotate
    # the file and keep writing to the renamed one.
    makers = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}
    resource = {"service.name": "checkout", "blob": "x" * 300_000}
    per_exporter = 3
    await asyncio.gather(
        *(
            exporter.consume(makers[signal](1, resource=resource))
            for _ in range(per_exporter)
            for signal, exporter in zip(signals, exporters, strict=True)
        )
    )
    await exporters[0].shutdown()
    await exporters[1].consume(make_metrics(1))
    for exporter in exporters[1:]:
        await exporter.shutdown()

    files = [*backups(path), path]
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(files) == 4
    assert all(f.stat().st_size <= 1024 * 1024 for f in files)
    assert len(lines) == per_exporter * len(exporters) + 1
    assert {next(iter(json.loads(line))) for line in lines} == set(SIGNAL_KEYS)
    assert shared.get(file.Writers)._open == {}


async def test_different_settings_for_one_path_are_refused(tmp_path):
    path = str(tmp_path / "out.jsonl")
    shared = Shared()
    first = make_exporter({"path": path}, shared=shared)
    await first.start(StaticHost())
    for other in ({"rotation": {}}, {"format": "proto"}, {"flush_interval": "2s"}):
        second = make_exporter({"path": path, **other}, id="file/other", shared=shared)
        with pytest.raises(ValueError, match="different format, rotation or flush_interval"):
            await second.start(StaticHost())
        await second.shutdown()
    await first.shutdown()


async def test_shutdown_flushes_buffered_data(tmp_path):
    path = tmp_path / "out.jsonl"
    exporter = make_exporter({"path": str(path), "flush_interval": "1h"})
    batch = make_traces(2)
    await exporter.start(StaticHost())
    await exporter.consume(batch)
    assert path.stat().st_size == 0
    await exporter.shutdown()
    await exporter.shutdown()
    assert read_lines(path) == [batch]


async def test_flush_interval_flushes_while_running(tmp_path):
    path = tmp_path / "out.jsonl"
    exporter = make_exporter({"path": str(path), "flush_interval": "20ms"})
    await exporter.start(StaticHost())
    await exporter.consume(make_logs(1))
    async with asyncio.timeout(5):
        while path.stat().st_size == 0:
            await asyncio.sleep(0.01)
    await exporter.shutdown()


async def test_shutdown_without_start_is_safe(tmp_path):
    await make_exporter({"path": str(tmp_path / "never.jsonl")}).shutdown()
    assert not (tmp_path / "never.jsonl").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_write_failure_is_retryable_and_counted():
    telemetry = Telemetry()
    exporter = make_exporter(
        {"path": "/dev/full", "flush_interval": 0}, Signal.LOGS, telemetry=telemetry
    )
    await exporter.start(StaticHost())
    with pytest.raises(RetryableError, match="No space left"):
        await exporter.consume(make_logs(3))
    labels = {"exporter": "file"}
    sample = telemetry.registry.get_sample_value
    assert sample("otelcol_exporter_send_failed_log_records_total", labels) == 3
    assert sample("otelcol_exporter_sent_log_records_total", labels) == 0
    with pytest.raises(OSError):
        await exporter.shutdown()


def test_factory():
    assert file.factory.type == "file"
    assert file.factory.create is file.FileExporter
    assert all(file.factory.supports(s) for s in Signal)


VALID = """
- path: ./out.jsonl
- path: /var/log/otel/spans.json
  format: proto
  flush_interval: 200ms
  rotation:
    max_megabytes: 10
    max_days: 3
    max_backups: 0
    localtime: true
- path: out.json
  rotation: {}
"""


@pytest.mark.parametrize("config", yaml.safe_load(VALID))
def test_valid_configs(config):
    parsed = file.Config.model_validate(config)
    assert parsed.path == config["path"]


def test_defaults():
    config = file.Config.model_validate(yaml.safe_load("path: out.json\nrotation:\n  max_days: 1"))
    assert config.format == "json"
    assert config.flush_interval == 1.0
    assert config.rotation.max_megabytes == 100
    assert config.rotation.max_backups == 100
    assert config.rotation.localtime is False
    assert file.Config(path="x").rotation is None
