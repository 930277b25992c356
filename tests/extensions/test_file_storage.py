"""file_storage: exporters' queues on disk. Records survive a new process (a new store over the
same directory), damaged ones are skipped and set aside, and an exporter queue kept there is
sent after a restart. Key-value stores (receivers' checkpoints) survive likewise, change all
at once or not at all, and a process killed while writing leaves a whole batch behind."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from collector.core.component import ComponentID, Kind
from collector.core.consumer import RetryableError
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.core.storage import Operation, OpKind, key_value_store
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


# --- key-value stores (receivers' checkpoints) ---------------------------------------------


async def test_key_values_outlive_the_store_and_owners_are_apart(tmp_path):
    first = (await storage(tmp_path)).key_value("receiver_filelog/app")
    first.set("offsets", b"\x00one")
    first.set("gone", b"soon")
    first.delete("gone")
    first.delete("never set")  # nothing to forget: no error
    (await storage(tmp_path)).key_value("receiver_filelog/other").set("offsets", b"two")
    again = (await storage(tmp_path, fsync=True)).key_value("receiver_filelog/app")
    assert again.get("offsets") == b"\x00one"
    assert again.get("gone") is None
    again.set("offsets", b"three")
    assert (await storage(tmp_path)).key_value("receiver_filelog/app").get("offsets") == b"three"
    assert (await storage(tmp_path)).key_value("receiver_filelog/other").get("offsets") == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "receiver_filelog_app.kv",
        "receiver_filelog_other.kv",
    ]


async def test_a_batch_applies_in_order_and_reads_its_own_writes(tmp_path):
    store = (await storage(tmp_path)).key_value("owner")
    store.set("a", b"1")
    read_a, read_b = Operation(OpKind.GET, "a"), Operation(OpKind.GET, "b")
    store.batch(
        Operation(OpKind.SET, "b", b"2"),
        Operation(OpKind.DELETE, "a"),
        read_a,
        read_b,
    )
    assert (read_a.value, read_b.value) == (None, b"2")
    assert (await storage(tmp_path)).key_value("owner").get("b") == b"2"


async def test_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    store = (await storage(tmp_path)).key_value("owner")
    store.set("a", b"old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_storage.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.batch(Operation(OpKind.SET, "a", b"new"), Operation(OpKind.SET, "b", b"new"))
    monkeypatch.undo()
    assert (store.get("a"), store.get("b")) == (b"old", None)
    assert (await storage(tmp_path)).key_value("owner").get("a") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["owner.kv"]  # no temporary left behind


async def test_a_damaged_key_value_file_is_set_aside_and_the_store_starts_empty(tmp_path, caplog):
    (await storage(tmp_path)).key_value("owner").set("a", b"value")
    path = tmp_path / "owner.kv"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    store = (await storage(tmp_path)).key_value("owner")
    assert store.get("a") is None
    assert store.damaged == 1
    assert "damaged file set aside" in caplog.text
    assert (tmp_path / "owner.kv.damaged").exists()
    store.set("a", b"again")
    assert (await storage(tmp_path)).key_value("owner").get("a") == b"again"


async def test_a_closed_store_refuses_calls(tmp_path):
    store = (await storage(tmp_path)).key_value("owner")
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.get("a")


WRITER = """
import asyncio, sys
from collector.core.component import Kind
from collector.core.storage import Operation, OpKind
from collector.extensions import file_storage
from tests.support.components import make_settings

extension = file_storage.factory.create(
    make_settings(Kind.EXTENSION, "file_storage"),
    file_storage.Config(directory=sys.argv[1], fsync=sys.argv[2] == "fsync"),
)
asyncio.run(extension.start(None))
store = extension.key_value("owner")
i = 0
while True:
    i += 1
    # Both keys in one batch, each value long enough that a torn write would show.
    value = str(i).encode() * 2000
    store.batch(
        Operation(OpKind.SET, "a", value),
        Operation(OpKind.SET, "b", value),
    )
    if i == 20:
        print("writing", flush=True)
"""


@pytest.mark.parametrize("sync", ["fsync", "no-fsync"])
async def test_a_process_killed_while_writing_leaves_a_whole_batch(tmp_path, sync):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), sync],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        assert await asyncio.to_thread(process.stdout.readline) == "writing\n"
        await asyncio.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    store = (await storage(tmp_path)).key_value("owner")
    a, b = store.get("a"), store.get("b")
    assert a is not None and a == b
    n = a[: len(a) // 2000]
    assert int(n) >= 20 and a == n * 2000
    assert store.damaged == 0


async def test_naming_a_key_value_storage_that_is_not_there_fails(tmp_path):
    with pytest.raises(ValueError, match="'file_storage/missing' is not a storage extension"):
        key_value_store(StaticHost(), "file_storage/missing", "receiver_filelog")
    host = StaticHost(extensions={ComponentID.parse("file_storage"): await storage(tmp_path)})
    key_value_store(host, "file_storage", "receiver_filelog").set("k", b"v")
    assert (tmp_path / "receiver_filelog.kv").exists()
