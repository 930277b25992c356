"""filelog: files tailed into log records as the OTel Collector's filelogreceiver does it.

The file set is driven poll by poll (no timing) for rotation, fingerprints and checkpoints;
the receiver runs for delivery, operators and retries; real collector processes show lines
appended while they run arriving, a stop and restart under a writer losing and duplicating
nothing, and rotation by rename while running."""

import asyncio
import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from collector.core.component import ComponentID
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import any_value_to_python
from collector.core.signals import Signal
from collector.extensions import file_storage
from collector.receivers.filelog import factory
from collector.receivers.filelog.config import Config
from collector.receivers.filelog.entry import Entry, Field
from collector.receivers.filelog.expr import ExprError, compile_expr
from collector.receivers.filelog.fileset import FileSet
from collector.receivers.filelog.operators import Pipeline
from collector.receivers.filelog.receiver import FileLogReceiver
from collector.receivers.filelog.timeparse import TimeParser
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess
from tests.support.sinks import ErrorConsumer, SinkConsumer

LOG = logging.getLogger("coldtail.test")


class Clock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def files(tmp_path: Path, include: str = "*.log", store=None, clock=None, **config) -> FileSet:
    cfg = Config.model_validate(
        {"include": [str(tmp_path / include)], "start_at": "beginning", **config}
    )
    return FileSet(cfg, LOG, store, clock=clock or Clock())


def poll(fs: FileSet) -> list[str]:
    """One poll, committed as if the pipeline accepted it: the entries' text."""
    cycle = fs.poll()
    fs.commit(cycle)
    return [t.data.decode() for t in cycle.tokens]


def append(path: Path, *lines: str, end: str = "\n") -> None:
    with open(path, "a") as f:
        f.write("".join(line + end for line in lines))


def records(sink: SinkConsumer) -> list:
    return [
        lr
        for batch in sink.batches
        for rl in batch.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]


def attrs(record) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in record.attributes}


def bodies(sink: SinkConsumer) -> list:
    return [any_value_to_python(r.body) for r in records(sink)]


async def receiver(tmp_path: Path, sink=None, host=None, **config) -> FileLogReceiver:
    cfg = Config.model_validate(
        {
            "include": [str(tmp_path / "*.log")],
            "start_at": "beginning",
            "poll_interval": "20ms",
            **config,
        }
    )
    r = factory.create(
        make_settings("receiver", "filelog"), cfg, {Signal.LOGS: sink or SinkConsumer()}
    )
    await r.start(host or StaticHost())
    return r


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# --- reading -----------------------------------------------------------------------------------


def test_start_at_end_reads_only_what_is_written_later_and_new_files_whole(tmp_path):
    append(tmp_path / "old.log", "before 1", "before 2")
    fs = files(tmp_path, start_at="end")
    assert poll(fs) == []
    append(tmp_path / "old.log", "after")
    append(tmp_path / "new.log", "first of a new file")
    assert sorted(poll(fs)) == ["after", "first of a new file"]
    assert poll(fs) == []


def test_lines_are_split_on_newlines_and_crlf_and_a_line_without_end_waits(tmp_path):
    clock = Clock()
    fs = files(tmp_path, clock=clock)
    (tmp_path / "a.log").write_bytes(b"one\r\ntwo\n\nthree")
    assert poll(fs) == ["one", "two", ""]  # the receiver skips the empty entry
    clock.now += 0.4
    assert poll(fs) == []  # "three" may still be written to
    clock.now += 0.2
    assert poll(fs) == ["three"]  # force_flush_period (500ms) without growth
    append(tmp_path / "a.log", " more", "four")
    assert poll(fs) == [" more", "four"]


def test_include_exclude_braces_and_double_star(tmp_path):
    (tmp_path / "app" / "deep" / "er").mkdir(parents=True)
    for name in ("app/a.log", "app/deep/er/b.log", "app/deep/c.txt", "app/debug.log", "x.log"):
        append(tmp_path / name, name)
    fs = files(tmp_path, include="app/**/*.{log,txt}", exclude=[str(tmp_path / "**/debug.*")])
    assert sorted(poll(fs)) == ["app/a.log", "app/deep/c.txt", "app/deep/er/b.log"]


def test_an_overlong_entry_is_cut_at_max_log_size_and_its_rest_dropped(tmp_path):
    fs = files(tmp_path, max_log_size=16)
    append(tmp_path / "a.log", "short", "x" * 100_000 + "END", "next")
    assert poll(fs) == ["short", "x" * 16, "next"]


def test_an_overlong_entry_still_being_written_is_dropped_to_its_end(tmp_path):
    fs = files(tmp_path, max_log_size=16)
    append(tmp_path / "a.log", "y" * 40, end="")
    assert poll(fs) == ["y" * 16]
    append(tmp_path / "a.log", "y" * 40 + " still the same entry")
    append(tmp_path / "a.log", "after")
    assert poll(fs) == ["after"]


def test_multiline_start_pattern_and_its_last_entry_flushed_when_the_file_rests(tmp_path):
    clock = Clock()
    fs = files(tmp_path, clock=clock, multiline={"line_start_pattern": r"^\d{4}-"})
    append(
        tmp_path / "a.log",
        "orphan line",
        "2024-01-01 first",
        "  at frame 1",
        "2024-01-02 second",
        "  at frame 2",
    )
    assert poll(fs) == ["orphan line\n", "2024-01-01 first\n  at frame 1\n"]
    clock.now += 1
    assert poll(fs) == ["2024-01-02 second\n  at frame 2\n"]


def test_multiline_end_pattern_with_the_pattern_omitted(tmp_path):
    fs = files(tmp_path, multiline={"line_end_pattern": ";;\n", "omit_pattern": True})
    (tmp_path / "a.log").write_text("a\nb;;\nc;;\nd")
    assert poll(fs) == ["a\nb", "c"]


def test_utf16_lines_and_nop_bytes(tmp_path):
    (tmp_path / "a.log").write_bytes("été\nঅ\n".encode("utf-16le"))
    cycle = files(tmp_path, encoding="utf-16le").poll()
    assert [t.data.decode("utf-16le") for t in cycle.tokens] == ["été", "অ"]


async def test_records_carry_the_body_file_attributes_and_observed_time(tmp_path):
    link = tmp_path / "link.log"
    target = tmp_path / "target" / "real.txt"
    target.parent.mkdir()
    target.write_text("  hello world  \n\n")
    link.symlink_to(target)
    sink = SinkConsumer()
    before = time.time_ns()
    r = await receiver(
        tmp_path,
        sink,
        include_file_path=True,
        include_file_name_resolved=True,
        include_file_path_resolved=True,
        include_file_record_number=True,
        attributes={"team": "core"},
        resource={"service.name": "tailed"},
    )
    await sink.wait_for(1)
    await r.shutdown()
    [record] = records(sink)
    assert any_value_to_python(record.body) == "hello world"  # trimmed; the empty line is none
    assert attrs(record) == {
        "team": "core",
        "log.file.name": "link.log",
        "log.file.path": str(link),
        "log.file.name_resolved": "real.txt",
        "log.file.path_resolved": str(target),
        "log.file.record_number": 1,
    }
    assert record.observed_time_unix_nano >= before and record.time_unix_nano == 0
    resource = sink.batches[0].resource_logs[0].resource
    assert {kv.key: kv.value.string_value for kv in resource.attributes} == {
        "service.name": "tailed"
    }


async def test_whitespace_is_kept_when_asked_and_nop_bodies_are_bytes(tmp_path):
    (tmp_path / "a.log").write_text("  padded  \n")
    sink = SinkConsumer()
    r = await receiver(
        tmp_path, sink, preserve_leading_whitespaces=True, preserve_trailing_whitespaces=True
    )
    await sink.wait_for(1)
    await r.shutdown()
    assert bodies(sink) == ["  padded  "]
    sink = SinkConsumer()
    r = await receiver(tmp_path, sink, encoding="nop", force_flush_period="10ms")
    await sink.wait_for(1)
    await r.shutdown()
    assert bodies(sink) == [b"padded"]


async def test_a_missing_file_is_logged_once_and_the_others_are_read(tmp_path, caplog):
    (tmp_path / "gone.log").symlink_to(tmp_path / "nowhere")
    append(tmp_path / "ok.log", "fine")
    sink = SinkConsumer()
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        r = await receiver(tmp_path, sink)
        await sink.wait_for(1)
        await asyncio.sleep(0.2)  # several polls
        await r.shutdown()
    assert bodies(sink) == ["fine"]
    failures = [m for m in caplog.messages if "cannot read" in m]
    assert len(failures) == 1 and "gone.log" in failures[0]


def test_pipes_directories_and_old_files_are_passed_over(tmp_path):
    os.mkfifo(tmp_path / "pipe.log")  # opening it for reading must not hang the poll
    (tmp_path / "dir.log").mkdir()
    append(tmp_path / "old.log", "old")
    os.utime(tmp_path / "old.log", (time.time() - 7200, time.time() - 7200))
    append(tmp_path / "new.log", "new")
    assert poll(files(tmp_path, exclude_older_than="1h")) == ["new"]


def test_no_matching_file_is_a_warning_not_an_error(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert poll(files(tmp_path)) == []
    assert "no files match" in caplog.text


# --- rotation ----------------------------------------------------------------------------------


def test_rename_rotation_reads_every_line_once_in_order(tmp_path):
    live = tmp_path / "app.log"
    fs = files(tmp_path, include="app.log")
    append(live, "1", "2")
    assert poll(fs) == ["1", "2"]
    append(live, "3", "4")  # not read yet when the file is renamed away
    live.rename(tmp_path / "app.log.1")
    append(live, "5")
    assert poll(fs) == ["3", "4", "5"]  # the rotated file through its open handle, first
    append(tmp_path / "app.log.1", "4b")  # a late write to the rotated file
    append(live, "6")
    assert poll(fs) == ["4b", "6"]
    for _ in range(4):
        assert poll(fs) == []
    assert fs.lost == []  # drained and closed once it stopped growing


def test_rename_within_the_patterns_is_not_read_again(tmp_path):
    live = tmp_path / "app.log"
    fs = files(tmp_path, include="app.log*", include_file_name=True)
    append(live, "1", "2")
    assert poll(fs) == ["1", "2"]
    append(live, "3")
    live.rename(tmp_path / "app.log.1")
    append(live, "4")
    cycle = fs.poll()
    fs.commit(cycle)
    assert [(t.data, t.reader.attributes["log.file.name"]) for t in cycle.tokens] == [
        (b"3", "app.log.1"),
        (b"4", "app.log"),
    ]
    assert poll(fs) == []


def test_copytruncate_with_copies_in_the_patterns_loses_and_repeats_nothing(tmp_path):
    live, copy = tmp_path / "app.log", tmp_path / "app.log.1"
    fs = files(tmp_path, include="app.log*")
    append(live, "1", "2")
    assert poll(fs) == ["1", "2"]
    append(live, "3")
    shutil.copyfile(live, copy)
    assert poll(fs) == ["3"]  # the copy has the same start: read once
    append(live, "4")  # after the copy, before the truncation: lost, as in the Collector
    os.truncate(live, 0)
    append(live, "5")
    assert poll(fs) == ["5"]  # the truncated file starts again; the copy is known
    append(live, "6")
    assert poll(fs) == ["6"]


def test_copytruncate_before_the_last_lines_were_read_reads_them_from_the_copy(tmp_path):
    live, copy = tmp_path / "app.log", tmp_path / "app.log.1"
    fs = files(tmp_path, include="app.log*")
    append(live, "1", "2")
    assert poll(fs) == ["1", "2"]
    append(live, "3", "4")
    shutil.copyfile(live, copy)
    os.truncate(live, 0)
    append(live, "5")
    assert poll(fs) == ["3", "4", "5"]
    assert poll(fs) == []


def test_a_copy_still_being_written_is_not_read_from_its_start(tmp_path):
    live, copy = tmp_path / "app.log", tmp_path / "app.log.1"
    fs = files(tmp_path, include="app.log*")
    append(live, *(f"line {i}" for i in range(10)))
    assert len(poll(fs)) == 10
    copy.write_bytes(live.read_bytes()[:25])  # half copied
    assert poll(fs) == []
    shutil.copyfile(live, copy)
    os.truncate(live, 0)
    assert poll(fs) == []


def test_a_file_truncated_in_place_is_read_again_from_its_start(tmp_path):
    live = tmp_path / "app.log"
    fs = files(tmp_path)
    append(live, "first generation line")
    assert poll(fs) == ["first generation line"]
    live.write_text("second\n")  # same inode, new content
    assert poll(fs) == ["second"]
    live.write_text("")
    assert poll(fs) == []
    append(live, "third")
    assert poll(fs) == ["third"]


def test_two_files_with_the_same_content_are_read_once(tmp_path):
    append(tmp_path / "a.log", "same")
    append(tmp_path / "b.log", "same")
    assert poll(files(tmp_path)) == ["same"]


def test_more_files_than_max_concurrent_files_are_read_in_turns(tmp_path):
    for i in range(9):
        append(tmp_path / f"f{i}.log", f"file {i}")
    fs = files(tmp_path, max_concurrent_files=4)
    read = [line for _ in range(6) for line in poll(fs)]
    assert sorted(read) == [f"file {i}" for i in range(9)]
    for i in range(9):
        append(tmp_path / f"f{i}.log", f"again {i}")
    read = [line for _ in range(6) for line in poll(fs)]
    assert sorted(read) == [f"again {i}" for i in range(9)]


# --- checkpoints -------------------------------------------------------------------------------


async def kv_store(tmp_path: Path):
    extension = file_storage.factory.create(
        make_settings("extension", "file_storage"),
        file_storage.Config(directory=str(tmp_path / "storage"), create_directory=True),
    )
    await extension.start(None)
    return extension


async def test_a_restart_resumes_where_the_checkpoint_says(tmp_path):
    extension = await kv_store(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fs = files(logs, store=extension.key_value("receiver_filelog"), start_at="end")
    append(logs / "a.log", "before start")
    assert poll(fs) == []
    append(logs / "a.log", "1", "2")
    assert poll(fs) == ["1", "2"]
    cycle = fs.poll()  # read, but the pipeline never took it: no commit
    append(logs / "a.log", "3")
    fs.close()
    assert cycle.tokens == []
    append(logs / "a.log", "4")
    (logs / "a.log").rename(logs / "a.log.old")  # a restart finds it renamed: still known
    (logs / "a.log.old").rename(logs / "b.log")
    again = files(logs, store=extension.key_value("receiver_filelog"), start_at="end")
    again.restore()
    assert poll(again) == ["3", "4"]


async def test_without_storage_a_restart_starts_as_start_at_says(tmp_path):
    append(tmp_path / "a.log", "1")
    assert poll(files(tmp_path)) == ["1"]
    assert poll(files(tmp_path)) == ["1"]
    assert poll(files(tmp_path, start_at="end")) == []


async def test_offsets_move_only_once_the_pipeline_took_the_entries(tmp_path):
    extension = await kv_store(tmp_path)
    host = StaticHost(extensions={ComponentID.parse("file_storage"): extension})
    append(tmp_path / "a.log", "1", "2")
    refusing = ErrorConsumer(RetryableError("memory limit"))
    r = await receiver(
        tmp_path,
        refusing,
        host,
        storage="file_storage",
        retry_on_failure={"enabled": True, "initial_interval": "10ms", "max_interval": "10ms"},
    )
    await until(lambda: len(refusing.batches) >= 3)
    await r.shutdown()  # retrying when stopped: nothing acknowledged, nothing committed
    assert extension.key_value("receiver_filelog").get("knownFiles") is None
    sink = SinkConsumer()
    r = await receiver(tmp_path, sink, host, storage="file_storage")
    await sink.wait_for(2)
    append(tmp_path / "a.log", "3")
    await sink.wait_for(3)
    await r.shutdown()
    r = await receiver(tmp_path, sink, host, storage="file_storage")  # clean stop: nothing again
    append(tmp_path / "a.log", "4")
    await sink.wait_for(4)
    await asyncio.sleep(0.1)
    await r.shutdown()
    assert bodies(sink) == ["1", "2", "3", "4"]


async def test_a_refused_batch_is_dropped_and_counted_unless_retries_are_on(tmp_path, caplog):
    append(tmp_path / "a.log", "1", "2")
    refusing = ErrorConsumer(PermanentError("bad data"))
    settings = make_settings("receiver", "filelog")
    cfg = Config.model_validate(
        {"include": [str(tmp_path / "*.log")], "start_at": "beginning", "poll_interval": "20ms"}
    )
    r = FileLogReceiver(settings, cfg, {Signal.LOGS: refusing})
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        await r.start(StaticHost())
        await until(lambda: len(refusing.batches) == 1)
        append(tmp_path / "a.log", "3")
        await until(lambda: len(refusing.batches) == 2)
        await r.shutdown()
    refused = settings.telemetry.registry.get_sample_value(
        "otelcol_receiver_refused_log_records_total",
        {"receiver": "filelog", "transport": ""},
    )
    assert refused == 3
    assert "refused by the pipeline" in caplog.text


async def test_retries_deliver_once_the_pipeline_takes_again(tmp_path):
    class Flaky(SinkConsumer):
        refusals = 2

        async def consume(self, batch) -> None:
            if self.refusals:
                self.refusals -= 1
                batch.resource_logs.clear()  # what a failed attempt changed must not matter
                raise RetryableError("busy")
            await super().consume(batch)

    sink = Flaky()
    append(tmp_path / "a.log", "1", "2")
    r = await receiver(
        tmp_path, sink, retry_on_failure={"enabled": True, "initial_interval": "10ms"}
    )
    await sink.wait_for(2)
    await r.shutdown()
    assert bodies(sink) == ["1", "2"]


async def test_delete_after_read_removes_files_once_accepted(tmp_path):
    append(tmp_path / "a.log", "1")
    sink = SinkConsumer()
    r = await receiver(tmp_path, sink, delete_after_read=True)
    await sink.wait_for(1)
    await until(lambda: not (tmp_path / "a.log").exists())
    await r.shutdown()
    assert bodies(sink) == ["1"]


async def test_naming_a_storage_that_is_not_running_fails_the_start(tmp_path):
    cfg = Config.model_validate({"include": [str(tmp_path)], "storage": "file_storage/nope"})
    r = FileLogReceiver(make_settings("receiver", "filelog"), cfg, {Signal.LOGS: SinkConsumer()})
    with pytest.raises(ValueError, match="'file_storage/nope' is not a storage extension"):
        await r.start(StaticHost())
    await r.shutdown()


# --- operators ---------------------------------------------------------------------------------


def run(operators: list, body) -> Entry | None:
    cfg = Config.model_validate({"include": ["x"], "operators": operators})
    return Pipeline(cfg.operators, LOG).run(Entry(body, {"log.file.name": "a.log"}))


def test_regex_parser_with_timestamp_and_severity():
    entry = run(
        [
            {
                "type": "regex_parser",
                "regex": r"^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) "
                r"(?<sev>[A-Z]*) (?P<msg>.*)$",
                "timestamp": {
                    "parse_from": "attributes.time",
                    "layout": "%Y-%m-%d %H:%M:%S",
                    "location": "UTC",
                },
                "severity": {"parse_from": "attributes.sev"},
            }
        ],
        "2023-06-19 05:20:50 ERROR This is a test error message",
    )
    assert entry is not None
    assert entry.attributes == {
        "log.file.name": "a.log",
        "time": "2023-06-19 05:20:50",
        "sev": "ERROR",
        "msg": "This is a test error message",
    }
    assert entry.timestamp == 1687152050 * 10**9
    assert (entry.severity, entry.severity_text) == (17, "ERROR")


def test_json_parser_to_body_then_time_severity_move_copy_add_remove():
    entry = run(
        [
            {"type": "json_parser", "parse_to": "body"},
            {
                "type": "time_parser",
                "parse_from": "body.ts",
                "layout_type": "epoch",
                "layout": "ms",
            },
            {
                "type": "severity_parser",
                "parse_from": "body.status",
                "mapping": {"warn": "5xx", "error": "4xx", "info": [{"min": 200, "max": 399}]},
                "overwrite_text": True,
            },
            {"type": "move", "from": "body.msg", "to": 'attributes["event.name"]'},
            {"type": "copy", "from": "body.nested.user", "to": "resource.user"},
            {"type": "add", "field": "body.tags", "value": ["a", {"b": 1}]},
            {"type": "remove", "field": "body.ts"},
            # a dotted name is a path of nested keys: not there, so it fails, quietly
            {"type": "remove", "field": "attributes.log.file.name", "on_error": "send_quiet"},
        ],
        json.dumps({"msg": "hi", "ts": 1700000000123, "status": 404, "nested": {"user": "ann"}}),
    )
    assert entry is not None
    assert entry.body == {"status": 404, "nested": {"user": "ann"}, "tags": ["a", {"b": 1}]}
    assert entry.attributes == {"log.file.name": "a.log", "event.name": "hi"}
    assert entry.resource == {"user": "ann"}
    assert entry.timestamp == 1700000000123 * 10**6
    assert (entry.severity, entry.severity_text) == (17, "ERROR")


def test_move_to_body_replaces_or_merges_a_layer():
    entry = run(
        [
            {"type": "json_parser", "parse_to": "body"},
            {"type": "move", "from": "body.log", "to": "body"},
        ],
        '{"log": "line"}',
    )
    assert entry is not None and entry.body == "line"
    entry = run(
        [
            {"type": "json_parser", "parse_to": "body"},
            {"type": "move", "from": "body.object", "to": "body"},
        ],
        '{"first": 1, "object": {"name": "x"}}',
    )
    assert entry is not None and entry.body == {"first": 1, "name": "x"}


def test_on_error_send_goes_on_and_drop_drops_and_output_skips_ahead():
    ops = [
        {"type": "json_parser", "output": "tag"},
        {"type": "add", "field": "attributes.skipped", "value": True},
        {"type": "add", "id": "tag", "field": "attributes.tagged", "value": True},
    ]
    entry = run(ops, "not json")
    assert entry is not None and entry.attributes == {"log.file.name": "a.log", "tagged": True}
    assert run([{"type": "json_parser", "on_error": "drop"}], "not json") is None
    assert (
        run([{"type": "regex_parser", "regex": "(?P<x>y)", "on_error": "drop_quiet"}], "z") is None
    )


def test_embedded_timestamp_failure_still_parses_severity():
    entry = run(
        [
            {
                "type": "regex_parser",
                "regex": r"(?P<t>\S+) (?P<s>\S+)",
                "timestamp": {"parse_from": "attributes.t", "layout": "%Y"},
                "severity": {"parse_from": "attributes.s"},
            }
        ],
        "notayear warn",
    )
    assert entry is not None and entry.timestamp == 0 and entry.severity == 13


@pytest.mark.parametrize(
    ("layout_type", "layout", "value", "iso"),
    [
        (
            "strptime",
            "%Y-%m-%dT%H:%M:%S.%L%z",
            "2022-01-02T14:24:56.123+0100",
            "2022-01-02T13:24:56.123+00:00",
        ),
        (
            "strptime",
            "%d/%b/%Y:%H:%M:%S %z",
            "10/Oct/2000:13:55:36 -0700",
            "2000-10-10T20:55:36+00:00",
        ),
        (
            "strptime",
            "%a %b %e %H:%M:%S %Z %Y",
            "Fri Jun  5 13:50:27 EST 2020",
            "2020-06-05T18:50:27+00:00",
        ),
        (
            "strptime",
            "%Y-%m-%d %H:%M:%S,%f",
            "2022-01-02 07:24:56,123456",
            "2022-01-02T07:24:56.123456+00:00",
        ),
        ("strptime", "%D %r", "06/19/23 05:20:50 PM", "2023-06-19T17:20:50+00:00"),
        (
            "gotime",
            "2006-01-02T15:04:05.999999999Z07:00",
            "2022-01-02T14:24:56.5Z",
            "2022-01-02T14:24:56.5+00:00",
        ),
        (
            "gotime",
            "Jan _2 15:04:05.000 MST 2006",
            "Jun  5 13:50:27.250 PDT 2020",
            "2020-06-05T20:50:27.25+00:00",
        ),
        ("gotime", "02 Jan 06 15:04 -0700", "05 Jun 20 13:50 +0200", "2020-06-05T11:50:00+00:00"),
        ("epoch", "s", "1136214245", "2006-01-02T15:04:05+00:00"),
        ("epoch", "s.ms", 1136214245.123, "2006-01-02T15:04:05.123+00:00"),
        ("epoch", "us", 1136214245123456, "2006-01-02T15:04:05.123456+00:00"),
    ],
)
def test_time_layouts(layout_type, layout, value, iso):
    from datetime import datetime

    expected = datetime.fromisoformat(iso)
    ns = TimeParser(layout_type, layout, "UTC").parse(value)
    assert ns == int(expected.timestamp()) * 10**9 + expected.microsecond * 1000


def test_nanoseconds_are_kept_and_a_missing_year_is_this_year():
    assert TimeParser("epoch", "s.ns").parse("1136214245.123456789") == 1136214245123456789
    assert TimeParser("strptime", "%s", "UTC").parse("000000007") == 7 + (
        TimeParser("strptime", "%Y", "UTC").parse(str(time.gmtime().tm_year))
    )
    with pytest.raises(ValueError, match="does not match"):
        TimeParser("strptime", "%Y-%m-%d").parse("2020/01/01")


def test_fields_in_bracket_and_bare_forms():
    assert Field.parse('attributes["k8s.pod.name"]') == Field("attributes", ("k8s.pod.name",))
    assert Field.parse("message") == Field("body", ("message",))
    assert Field.parse("body.a['b.c'].d") == Field("body", ("a", "b.c", "d"))
    assert str(Field.parse('resource["x.y"].z')) == 'resource["x.y"].z'
    with pytest.raises(ValueError, match="invalid field"):
        Field.parse("body..x")


def evaluate(text: str, body, attributes=None):
    return compile_expr(text)(Entry(body, attributes or {}, {"host": "h1"}, timestamp=5))


@pytest.mark.parametrize(
    ("text", "body", "expected"),
    [
        ('body matches "^\\{"', '{"a": 1}', True),
        ('$ matches "^{.*}$"', "plain", False),
        ('body.format == "json" and attributes.level != "debug"', {"format": "json"}, True),
        ("body.count > 2 || body.count < -5", {"count": 3}, True),
        ('not (body contains "x") && body startsWith "ab" and body endsWith "yz"', "abyz", True),
        ('attributes["log.file.name"] in ["a.log", "b.log"]', "", True),
        ('"k" not in body', {"k": 1}, False),
        ('resource.host + "-" + string(body.n * 2) == "h1-4"', {"n": 2}, True),
        ('len(body) == 3 ? lower("A") : upper("b")', "abc", "a"),
        ("body.missing == nil and body?.missing?.deeper == nil", {}, True),
        ('trim(body) == "x" && timestamp == 5', " x ", True),
        ('env("FILELOG_TEST_ENV") == "set"', "", True),
    ],
)
def test_expressions(monkeypatch, text, body, expected):
    monkeypatch.setenv("FILELOG_TEST_ENV", "set")
    assert evaluate(text, body, {"log.file.name": "a.log"}) == expected


def test_expression_type_errors_are_errors():
    with pytest.raises(ExprError, match="matches needs text"):
        evaluate('body matches "x"', {"a": 1})
    with pytest.raises(ExprError, match="expected a boolean"):
        evaluate("body.n && true", {"n": 1})


def test_router_routes_by_expression_adds_route_attributes_and_drops_the_unmatched():
    ops = [
        {
            "type": "router",
            "routes": [
                {"output": "json", "expr": 'body matches "^\\{"', "attributes": {"f": "json"}},
                {"output": "kv", "expr": 'body startsWith "k="'},
            ],
        },
        {"type": "json_parser", "id": "json", "output": "done"},
        {"type": "regex_parser", "id": "kv", "regex": "^k=(?P<k>.*)$"},
        {"type": "noop", "id": "done"},
    ]
    json_entry = run(ops, '{"a": 1}')
    assert json_entry is not None and json_entry.attributes["f"] == "json"
    assert json_entry.attributes["a"] == 1 and "k" not in json_entry.attributes
    kv_entry = run(ops, "k=v")
    assert kv_entry is not None and kv_entry.attributes["k"] == "v"
    assert run(ops, "neither") is None  # no route, no default: dropped, as the Collector does
    with_default = [{**ops[0], "default": "done"}, *ops[1:]]
    assert run(with_default, "neither") is not None


def test_if_skips_the_operator_and_expr_values_are_computed():
    ops = [
        {"type": "json_parser", "if": 'body matches "^\\{"'},
        {"type": "add", "field": "attributes.size", "value": "EXPR(len(body))"},
        {"type": "add", "id": "env", "field": "resource.env", "value": 'EXPR(env("NOPE") + "x")'},
    ]
    plain = run(ops, "not json")
    assert plain is not None and plain.attributes == {"log.file.name": "a.log", "size": 8}
    assert plain.resource == {"env": "x"}
    parsed = run(ops, '{"a": 2}')
    assert parsed is not None and parsed.attributes["a"] == 2


def test_a_regex_parser_cache_returns_copies():
    cfg = Config.model_validate(
        {
            "include": ["x"],
            "operators": [{"type": "regex_parser", "regex": "(?P<x>.)", "cache": {"size": 2}}],
        }
    )
    pipeline = Pipeline(cfg.operators, LOG)
    for body in ("a", "b", "a", "c", "a"):
        entry = pipeline.run(Entry(body, {}))
        assert entry is not None and entry.attributes == {"x": body}
        entry.attributes["x"] = "changed"  # must not reach the cache
    step = pipeline.steps[0]
    assert len(step.cache) == 2  # type: ignore[attr-defined]


def test_the_collector_contribs_kubernetes_example_parses_all_three_runtimes():
    source = Path(__file__).parents[1] / "testdata" / "upstream_configs"
    upstream = yaml.safe_load(
        (source / "opentelemetry-collector-contrib-kubernetes-filelog.yaml").read_text()
    )["receivers"]["filelog"]
    cfg = Config.model_validate(upstream)
    pipeline = Pipeline(cfg.operators, LOG)
    uid = "4b7e9a61-3f8e-4c9d-8a11-5c1f4e7a0d2b"
    path = f"/var/log/pods/shop_cart-7d9c8_{uid}/cart/2.log"
    lines = {
        "containerd": "2023-06-19T05:20:50.123456789Z stdout F hello containerd",
        "crio": "2023-06-19T05:20:50.123456789+00:00 stderr F hello crio",
        "docker": json.dumps(
            {"log": "hello docker\n", "stream": "stdout", "time": "2023-06-19T05:20:50.123456789Z"}
        ),
    }
    for runtime, line in lines.items():
        entry = pipeline.run(Entry(line, {"log.file.path": path}))
        assert entry is not None, runtime
        assert entry.body.strip() == f"hello {runtime}"
        assert entry.timestamp == 1687152050_123456789, runtime
        assert entry.resource == {
            "k8s.container.name": "cart",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": "cart-7d9c8",
            "k8s.container.restart_count": "2",
            "k8s.pod.uid": uid,
        }
        assert entry.attributes["log.iostream"] == ("stderr" if runtime == "crio" else "stdout")


# --- end to end, real collector processes --------------------------------------------------------


PIPELINE = """
extensions:
  file_storage: {{directory: "{storage}", create_directory: true}}
receivers:
  filelog:
    include: ["{logs}/*.log"]
    start_at: beginning
    poll_interval: 50ms
    storage: file_storage
    operators:
      - type: regex_parser
        regex: '^seq=(?P<seq>\\d+)'
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  extensions: [file_storage]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [filelog], exporters: [file]}}
"""


class Writer(threading.Thread):
    """Appends `seq=N` lines to app.log, one every `pause` seconds, until `total` lines or
    `stop`; with `rotate_every`, renames the file that often to app.log.N (outside the
    patterns) and goes on in a new app.log, as a logger rotating by rename does."""

    def __init__(
        self, logs: Path, pause: float = 0.002, rotate_every: int = 0, total: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.logs, self.pause, self.rotate_every, self.total = logs, pause, rotate_every, total
        self.written = 0
        self.stop = threading.Event()

    def _more(self) -> bool:
        return not self.stop.is_set() and (not self.total or self.written < self.total)

    def run(self) -> None:
        path = self.logs / "app.log"
        while self._more():
            with open(path, "a") as f:
                while self._more():
                    f.write(f"seq={self.written} {'x' * (self.written % 50)}\n")
                    f.flush()
                    self.written += 1
                    time.sleep(self.pause)
                    if self.rotate_every and self.written % self.rotate_every == 0:
                        break
            if self.rotate_every and self.written % self.rotate_every == 0:
                path.rename(self.logs / f"app.log.{self.written}")


def sequence_numbers(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [
        int(kv.value.string_value)
        for batch in read_requests(out)[Signal.LOGS]
        for rl in batch.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
        for kv in lr.attributes
        if kv.key == "seq"
    ]


async def wait_for_lines(out: Path, count: int, timeout: float = 10.0) -> list[int]:
    async with asyncio.timeout(timeout):
        while len(seen := sequence_numbers(out)) < count:
            await asyncio.sleep(0.05)
    return seen


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    logs, out = tmp_path / "logs", tmp_path / "out.jsonl"
    logs.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(PIPELINE.format(storage=tmp_path / "storage", logs=logs, out=out))
    return logs, out, config


async def test_e2e_lines_appended_while_running_arrive_also_across_rename_rotation(tmp_path):
    logs, out, config = setup(tmp_path)
    collector = CollectorProcess(config)
    await asyncio.to_thread(collector.start)
    writer = Writer(logs, pause=0.001, rotate_every=300, total=900)
    try:
        writer.start()
        await asyncio.to_thread(writer.join, 20)
        await wait_for_lines(out, 900)
        await asyncio.sleep(0.3)  # nothing more may come
    finally:
        writer.stop.set()
        code = await asyncio.to_thread(collector.stop)
    assert code == 0, collector.log
    assert sorted(logs.iterdir()) == [
        logs / n for n in ("app.log.300", "app.log.600", "app.log.900")
    ]
    seen = sequence_numbers(out)
    assert sorted(seen) == list(range(900))
    assert seen == sorted(seen), "lines came out of order across a rotation"


@pytest.mark.slow
async def test_e2e_stop_and_restart_under_a_writer_delivers_every_line_once(tmp_path):
    logs, out, config = setup(tmp_path)
    writer = Writer(logs, pause=0.002)
    writer.start()
    stopped, started = [], []  # lines written when each run stopped, when the next started
    try:
        for run in range(4):  # four runs; the writer never stops meanwhile
            collector = CollectorProcess(config)
            await asyncio.to_thread(collector.start)
            started.append(writer.written)
            if run == 3:
                break
            await asyncio.sleep(0.6)
            code = await asyncio.to_thread(collector.stop, signal.SIGTERM)
            assert code == 0, collector.log
            stopped.append(writer.written)
            await asyncio.sleep(0.3)  # lines written while no collector runs
        writer.stop.set()
        writer.join()
        await wait_for_lines(out, writer.written)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(collector.stop) == 0, collector.log
    finally:
        writer.stop.set()
        collector.kill()
    assert all(later > earlier for earlier, later in zip(stopped, started[1:], strict=True))
    seen = sequence_numbers(out)
    duplicated = sorted({n for n in seen if seen.count(n) > 1})
    missing = sorted(set(range(writer.written)) - set(seen))
    assert not duplicated and not missing, (duplicated[:10], missing[:10])


async def test_e2e_a_killed_collector_reads_again_at_most_what_was_not_acknowledged(tmp_path):
    logs, out, config = setup(tmp_path)
    writer = Writer(logs, pause=0.002)
    writer.start()
    try:
        collector = CollectorProcess(config)
        await asyncio.to_thread(collector.start)
        await asyncio.sleep(0.8)
        collector.kill()  # SIGKILL: no shutdown, no final checkpoint
        delivered = len(sequence_numbers(out))
        collector = CollectorProcess(config)
        await asyncio.to_thread(collector.start)
        writer.stop.set()
        writer.join()
        await wait_for_lines(out, writer.written)
        assert await asyncio.to_thread(collector.stop) == 0, collector.log
    finally:
        writer.stop.set()
        collector.kill()
    seen = sequence_numbers(out)
    assert set(seen) == set(range(writer.written))  # at least once: nothing lost
    repeated = len(seen) - len(set(seen))
    assert delivered > 0
    assert repeated < 200, f"{repeated} lines read twice: more than the unacknowledged poll"
