"""file_storage: exporters' queues on disk. Records survive a new process (a new store over the
same directory), damaged ones are skipped and set aside, and an exporter queue kept there is
sent after a restart."""

import asyncio

import pytest

from collector.core.component import ComponentID, Kind
from collector.core.consumer import RetryableError
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.exporters.sender import Exporter, SenderConfig
from collector.extensions import file_storage
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings


async def storage(directory, **config) -> file_storage.FileStorage:
    extension = file_storage.factory.create(
        make_settings(Kind.EXTENSION, "file_storage"),
        file_storage.Config(directory=str(directory), **config),
    )
    await extension.start(None)
    return extension


async def test_records_outlive_the_store_in_order_until_removed(tmp_path):
    first = (await storage(tmp_path)).queue("otlp_traces")
    keys = [first.add(f"batch {i}".encode()) for i in range(3)]
    first.remove(keys[1])
    again = (await storage(tmp_path, fsync=True)).queue("otlp_traces")
    assert again.records() == [(keys[0], b"batch 0"), (keys[2], b"batch 2")]
    assert again.add(b"batch 3") > keys[2]  # keys keep growing across processes


async def test_a_damaged_record_is_skipped_and_set_aside(tmp_path, caplog):
    queue = (await storage(tmp_path)).queue("otlp_traces")
    good, bad = queue.add(b"good"), queue.add(b"will be damaged")
    [path] = [p for p in (tmp_path / "otlp_traces").iterdir() if p.stem == f"{bad:020d}"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / "otlp_traces" / "00000000000000000099.tmp").write_bytes(b"half")
    assert queue.records() == [(good, b"good")]
    assert queue.damaged == 1
    assert "damaged record skipped" in caplog.text
    assert sorted(p.suffix for p in (tmp_path / "otlp_traces").iterdir()) == [".batch", ".damaged"]


async def test_a_missing_directory_fails_the_start_unless_created(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        await storage(tmp_path / "missing")
    await storage(tmp_path / "created", create_directory=True)
    assert (tmp_path / "created").is_dir()


class Down(Exporter[SenderConfig]):
    """An exporter whose backend refuses until `up` is set; records what it sent."""

    up = False
    sent: list = []

    async def push(self, batch) -> None:
        if not Down.up:
            raise RetryableError("backend down")
        Down.sent.append(batch)


def exporter(host_storage) -> tuple[Down, StaticHost]:
    config = SenderConfig.model_validate(
        {
            "sending_queue": {"storage": "file_storage", "num_consumers": 1},
            "retry_on_failure": {"initial_interval": "10ms", "max_interval": "10ms"},
        }
    )
    host = StaticHost(extensions={ComponentID.parse("file_storage"): host_storage})
    return Down(make_settings(Kind.EXPORTER, "otlp"), config, Signal.TRACES), host


async def test_an_exporter_queue_on_disk_is_sent_after_a_restart(tmp_path):
    Down.up, Down.sent = False, []
    first, host = exporter(await storage(tmp_path))
    await first.start(host)
    for spans in (1, 2, 3):
        await first.consume(make_traces(spans))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first.shutdown(), 0.3)  # the backend never came back

    Down.up = True
    second, host = exporter(await storage(tmp_path))
    await second.start(host)
    await second.flush()
    await second.shutdown()
    assert sorted(count_items(b) for b in Down.sent) == [1, 2, 3]
    assert list((tmp_path / "otlp_traces").iterdir()) == []  # sent: removed


async def test_naming_a_storage_that_is_not_there_fails_the_start():
    config = SenderConfig.model_validate({"sending_queue": {"storage": "file_storage/missing"}})
    down = Down(make_settings(Kind.EXPORTER, "otlp"), config, Signal.TRACES)
    with pytest.raises(ValueError, match="'file_storage/missing' is not a storage extension"):
        await down.start(StaticHost())
