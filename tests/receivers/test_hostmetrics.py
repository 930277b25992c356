"""The hostmetrics receiver reading this machine: names, units, attributes and default
switches as the OTel Collector's, filters, root_path, and the per-process scraper."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from collector.core.component import Kind
from collector.core.pdata import Metrics, get_attr
from collector.core.signals import Signal
from collector.receivers import hostmetrics
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

ALL = ("cpu", "disk", "filesystem", "load", "memory", "network", "paging", "processes", "system")

# What upstream emits by default: name -> (unit, "sum" or "gauge", monotonic).
DEFAULTS = {
    "system.cpu.time": ("s", "sum", True),
    "system.disk.io": ("By", "sum", True),
    "system.disk.operations": ("{operations}", "sum", True),
    "system.disk.io_time": ("s", "sum", True),
    "system.disk.operation_time": ("s", "sum", True),
    "system.disk.weighted_io_time": ("s", "sum", True),
    "system.disk.pending_operations": ("{operations}", "sum", False),
    "system.disk.merged": ("{operations}", "sum", True),
    "system.filesystem.usage": ("By", "sum", False),
    "system.filesystem.inodes.usage": ("{inodes}", "sum", False),
    "system.cpu.load_average.1m": ("{thread}", "gauge", False),
    "system.cpu.load_average.5m": ("{thread}", "gauge", False),
    "system.cpu.load_average.15m": ("{thread}", "gauge", False),
    "system.memory.usage": ("By", "sum", False),
    "system.network.io": ("By", "sum", True),
    "system.network.packets": ("{packets}", "sum", True),
    "system.network.errors": ("{errors}", "sum", True),
    "system.network.dropped": ("{packets}", "sum", True),
    "system.network.connections": ("{connections}", "sum", False),
    "system.paging.operations": ("{operations}", "sum", True),
    "system.paging.faults": ("{faults}", "sum", True),
    "system.processes.count": ("{processes}", "sum", False),
    "system.processes.created": ("{processes}", "sum", True),
    "system.uptime": ("s", "gauge", False),
}


def receiver(sink=None, **config) -> hostmetrics.HostMetricsReceiver:
    cfg = hostmetrics.Config.model_validate(config)
    settings = make_settings(Kind.RECEIVER, "hostmetrics")
    return hostmetrics.HostMetricsReceiver(settings, cfg, {Signal.METRICS: sink or SinkConsumer()})


def scrape(**scrapers) -> Metrics:
    return receiver(scrapers=scrapers).scrape()


def host_metrics(batch: Metrics) -> dict:
    """The host's metrics (those without a resource of their own) by name."""
    return {
        m.name: m
        for rm in batch.resource_metrics
        if not rm.resource.attributes
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def points(metric) -> list[tuple[dict, float]]:
    data = metric.sum if metric.HasField("sum") else metric.gauge
    return [
        (
            {kv.key: kv.value.string_value for kv in p.attributes},
            p.as_int if p.HasField("as_int") else p.as_double,
        )
        for p in data.data_points
    ]


def by(metric, *keys: str) -> dict:
    """The metric's values keyed by the given attributes' values."""
    return {tuple(a[k] for k in keys): v for a, v in points(metric)}


def processes(batch: Metrics) -> dict[int, tuple[dict, dict]]:
    """pid -> (resource attributes, metrics by name) of the process scraper's resources."""
    found = {}
    for rm in batch.resource_metrics:
        pid = get_attr(rm.resource.attributes, "process.pid")
        if pid is not None:
            attributes = {
                kv.key: get_attr(rm.resource.attributes, kv.key) for kv in rm.resource.attributes
            }
            found[pid] = (attributes, {m.name: m for sm in rm.scope_metrics for m in sm.metrics})
    return found


def physical_fs_types() -> set[str]:
    lines = Path("/proc/filesystems").read_text().splitlines()
    return {line.split()[-1] for line in lines if not line.startswith("nodev")}


# --- defaults ---------------------------------------------------------------------------------


def test_listed_scrapers_emit_upstreams_default_metrics_with_their_units():
    batch = receiver(scrapers={name: None for name in ALL}).scrape()
    metrics = host_metrics(batch)
    # paging.usage needs a swap device; this machine may have none.
    assert set(DEFAULTS) <= set(metrics) <= set(DEFAULTS) | {"system.paging.usage"}
    for name, (unit, kind, monotonic) in DEFAULTS.items():
        metric = metrics[name]
        assert metric.unit == unit, name
        assert metric.HasField(kind), name
        if kind == "sum":
            assert metric.sum.is_monotonic is monotonic, name
            assert metric.sum.aggregation_temporality == 2, name  # cumulative
    scopes = {sm.scope.name for rm in batch.resource_metrics for sm in rm.scope_metrics}
    assert scopes == {f"coldtail/hostmetrics/{name}" for name in ALL}


def test_cumulative_sums_start_at_boot():
    metrics = host_metrics(scrape(cpu={}, network={}))
    boot = int(psutil.boot_time() * 1e9)
    for name in ("system.cpu.time", "system.network.io"):
        starts = {p.start_time_unix_nano for p in metrics[name].sum.data_points}
        assert starts == {boot}, name


def test_cpu_time_per_logical_cpu_and_upstream_state():
    cpu = by(host_metrics(scrape(cpu={}))["system.cpu.time"], "cpu", "state")
    cpus = {c for c, _ in cpu}
    assert cpus == {f"cpu{i}" for i in range(psutil.cpu_count() or 0)}
    states = {s for _, s in cpu}
    assert {"user", "system", "idle", "wait", "interrupt", "softirq", "nice", "steal"} == states
    assert cpu[("cpu0", "idle")] > 0


def test_optional_cpu_metrics_when_enabled_and_time_when_disabled():
    r = receiver(
        scrapers={
            "cpu": {
                "metrics": {
                    "system.cpu.time": {"enabled": False},
                    "system.cpu.utilization": {"enabled": True},
                    "system.cpu.frequency": {"enabled": True},
                    "system.cpu.logical.count": {"enabled": True},
                    "system.cpu.physical.count": {"enabled": True},
                }
            }
        }
    )
    first = host_metrics(r.scrape())
    assert "system.cpu.time" not in first
    assert "system.cpu.utilization" not in first  # needs a previous reading
    assert points(first["system.cpu.logical.count"]) == [({}, psutil.cpu_count(logical=True))]
    assert first["system.cpu.logical.count"].unit == "{cpu}"
    assert points(first["system.cpu.physical.count"])[0][1] >= 1
    frequency = first.get("system.cpu.frequency")
    if psutil.cpu_freq() is not None:  # virtual machines may not tell
        assert frequency is not None and frequency.unit == "Hz"
        assert all(v > 1e6 for _, v in points(frequency))
    time.sleep(0.2)  # CPU times tick at 100 Hz: enough ticks for every CPU's shares
    utilization = host_metrics(r.scrape())["system.cpu.utilization"]
    assert utilization.unit == "1" and utilization.HasField("gauge")
    shares = by(utilization, "cpu", "state")
    assert all(0 <= v <= 1 for v in shares.values())
    for cpu in {c for c, _ in shares}:
        assert sum(v for (c, _), v in shares.items() if c == cpu) == pytest.approx(1, abs=0.05)


def test_cpu_utilization_shares_stay_within_0_and_1():
    # psutil's per-CPU times as Linux gives them: iowait may go backwards, and float sums of
    # large counters overshoot by a rounding error.
    from collector.receivers.hostmetrics.cpu import _utilization

    Times = psutil._psplatform.scputimes
    fields = {name: 0.0 for name in Times._fields}
    before = Times(**{**fields, "idle": 123456.78, "iowait": 50.0})
    after = Times(**{**fields, "idle": 123456.98, "iowait": 49.99, "system": 0.01})
    shares = {attrs["state"]: value for attrs, value in _utilization([before], [after])}
    assert all(0 <= v <= 1 for v in shares.values()), shares
    assert shares["wait"] == 0 and shares["idle"] == 1


def test_memory_states_partition_the_total_and_optional_metrics():
    scrapers = {
        "memory": {
            "metrics": {
                name: {"enabled": True}
                for name in (
                    "system.memory.utilization",
                    "system.memory.limit",
                    "system.memory.page_size",
                    "system.linux.memory.available",
                    "system.memory.linux.hugepages.usage",
                )
            }
        }
    }
    metrics = host_metrics(scrape(**scrapers))
    usage = by(metrics["system.memory.usage"], "state")
    assert set(usage) == {
        ("used",),
        ("free",),
        ("buffered",),
        ("cached",),
        ("slab_reclaimable",),
        ("slab_unreclaimable",),
    }
    total = points(metrics["system.memory.limit"])[0][1]
    assert total == psutil.virtual_memory().total
    # used + free + buffered + cached (reclaimable slab included) is the total, as `free` shows.
    parts = sum(usage[(s,)] for s in ("used", "free", "buffered", "cached"))
    assert parts == total
    shares = by(metrics["system.memory.utilization"], "state")
    assert shares[("used",)] == pytest.approx(usage[("used",)] / total)
    assert points(metrics["system.memory.page_size"]) == [({}, os.sysconf("SC_PAGE_SIZE"))]
    assert 0 < points(metrics["system.linux.memory.available"])[0][1] <= total
    hugepages = by(
        metrics["system.memory.linux.hugepages.usage"], "system.memory.linux.hugepages.state"
    )
    assert set(hugepages) == {("used",), ("free",)}
    assert "system.memory.linux.dirty" not in metrics  # off by default


def test_load_averages_divided_by_cpus_with_cpu_average():
    plain = host_metrics(scrape(load={}))["system.cpu.load_average.15m"]
    averaged = host_metrics(scrape(load={"cpu_average": True}))["system.cpu.load_average.15m"]
    assert points(averaged)[0][1] == pytest.approx(
        points(plain)[0][1] / (psutil.cpu_count() or 1), abs=0.05
    )


def test_system_uptime_and_process_counts():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    metrics = host_metrics(scrape(system={}, processes={}))
    uptime = points(metrics["system.uptime"])[0][1]
    assert uptime == pytest.approx(time.time() - psutil.boot_time(), abs=5)
    counts = by(metrics["system.processes.count"], "status")
    known = {"blocked", "daemon", "detached", "idle", "locked", "orphan", "paging", "running"}
    known |= {"sleeping", "stopped", "system", "unknown", "zombies"}
    assert {s for (s,) in counts} <= known
    assert sum(counts.values()) == pytest.approx(len(psutil.pids()), abs=10)
    created = points(metrics["system.processes.created"])[0][1]
    assert created >= child.pid  # pids are handed out in creation order until they wrap


# --- filters ----------------------------------------------------------------------------------


def test_filesystems_default_to_physical_ones_with_upstream_attributes():
    usage = host_metrics(scrape(filesystem={}))["system.filesystem.usage"]
    attrs = [a for a, _ in points(usage)]
    assert attrs and {a["type"] for a in attrs} <= physical_fs_types()
    assert {a["state"] for a in attrs} == {"used", "free", "reserved"}
    assert {a["mode"] for a in attrs} <= {"rw", "ro", "unknown"}
    assert set(attrs[0]) == {"device", "mode", "mountpoint", "type", "state"}


def test_filesystem_usage_and_inodes_match_statvfs():
    everything = {"include_virtual_filesystems": True}
    only_root = {"mount_points": ["/"], "match_type": "strict"}
    metrics = host_metrics(
        scrape(
            filesystem={
                **everything,
                "include_mount_points": only_root,
                "metrics": {"system.filesystem.utilization": {"enabled": True}},
            }
        )
    )
    usage = by(metrics["system.filesystem.usage"], "mountpoint", "state")
    assert {m for m, _ in usage} == {"/"}
    st = os.statvfs("/")
    total = st.f_blocks * st.f_frsize
    assert usage[("/", "used")] + usage[("/", "free")] + usage[("/", "reserved")] == total
    assert usage[("/", "free")] == pytest.approx(st.f_bavail * st.f_frsize, rel=0.01)
    inodes = by(metrics["system.filesystem.inodes.usage"], "mountpoint", "state")
    assert inodes[("/", "used")] + inodes[("/", "free")] == st.f_files
    (share,) = by(metrics["system.filesystem.utilization"], "mountpoint").values()
    assert share == pytest.approx(
        usage[("/", "used")] / (usage[("/", "used")] + usage[("/", "free")])
    )


def test_filesystem_type_and_mount_point_filters():
    everything = {"include_virtual_filesystems": True}

    def types(**options) -> set[str]:
        usage = host_metrics(scrape(filesystem={**everything, **options}))
        return {a["type"] for a, _ in points(usage["system.filesystem.usage"])}

    def mountpoints(**options) -> set[str]:
        usage = host_metrics(scrape(filesystem={**everything, **options}))
        return {a["mountpoint"] for a, _ in points(usage["system.filesystem.usage"])}

    present = types()
    assert present - physical_fs_types(), "virtual file systems shown when included"
    dropped = sorted(present)[:2]
    assert not types(exclude_fs_types={"fs_types": dropped, "match_type": "strict"}) & set(dropped)
    assert types(include_fs_types={"fs_types": dropped[:1], "match_type": "strict"}) == set(
        dropped[:1]
    )
    under_dev = {m for m in mountpoints() if m.startswith("/dev")}
    assert under_dev  # devtmpfs, /dev/shm, ...
    kept = mountpoints(
        exclude_mount_points={"mount_points": ["^/dev($|/)"], "match_type": "regexp"}
    )
    assert kept and not kept & under_dev


def test_disk_device_filters():
    diskstats = [line.split() for line in Path("/proc/diskstats").read_text().splitlines()]
    devices = {fields[2] for fields in diskstats}
    every = by(host_metrics(scrape(disk={}))["system.disk.io"], "device", "direction")
    assert {d for d, _ in every} == devices
    first = diskstats[0]
    assert every[(first[2], "read")] >= int(first[5]) * 512  # sectors read, and growing
    only = {"devices": [first[2]], "match_type": "strict"}
    included = by(
        host_metrics(scrape(disk={"include": only}))["system.disk.io"], "device", "direction"
    )
    assert {d for d, _ in included} == {first[2]}
    pattern = {"devices": [f"^{first[2][:3]}"], "match_type": "regexp"}
    rest = by(
        host_metrics(scrape(disk={"exclude": pattern}))["system.disk.operations"],
        "device",
        "direction",
    )
    assert {d for d, _ in rest} == {d for d in devices if not d.startswith(first[2][:3])}


def test_network_interfaces_filters_and_tcp_connections_by_state():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        metrics = host_metrics(
            scrape(network={"include": {"interfaces": ["lo"], "match_type": "strict"}})
        )
    finally:
        for s in (client, accepted, server):
            s.close()
    io = by(metrics["system.network.io"], "device", "direction")
    assert set(io) == {("lo", "transmit"), ("lo", "receive")}
    connections = by(metrics["system.network.connections"], "protocol", "state")
    assert {p for p, _ in connections} == {"tcp"}
    assert {"LISTEN", "ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "SYN_SENT"} <= {
        s for _, s in connections
    }
    assert connections[("tcp", "LISTEN")] >= 1
    assert connections[("tcp", "ESTABLISHED")] >= 2  # both ends of the connection above
    without_lo = host_metrics(
        scrape(network={"exclude": {"interfaces": ["lo"], "match_type": "strict"}})
    )
    assert "lo" not in {d for d, _ in by(without_lo["system.network.io"], "device", "direction")}


def test_conntrack_metrics_when_enabled(caplog):
    options = {
        "metrics": {f"system.network.conntrack.{n}": {"enabled": True} for n in ("count", "max")}
    }
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        metrics = host_metrics(scrape(network=options))
    limit = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    if limit.exists():
        assert points(metrics["system.network.conntrack.max"]) == [({}, int(limit.read_text()))]
        assert metrics["system.network.conntrack.count"].unit == "{entries}"
    else:  # no conntrack module here: said once, the rest still read
        assert "conntrack" in caplog.text and "system.network.io" in metrics
    assert "system.network.conntrack.max" not in host_metrics(scrape(network={}))


def test_paging_operations_and_faults_from_vmstat():
    vmstat = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    metrics = host_metrics(
        scrape(paging={"metrics": {"system.paging.utilization": {"enabled": True}}})
    )
    faults = by(metrics["system.paging.faults"], "type")
    assert faults[("major",)] >= int(vmstat["pgmajfault"])
    assert faults[("minor",)] + faults[("major",)] >= int(vmstat["pgfault"])
    operations = by(metrics["system.paging.operations"], "direction", "type")
    assert set(operations) == {(d, t) for d in ("page_in", "page_out") for t in ("major", "minor")}
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    usage = points(metrics["system.paging.usage"]) if "system.paging.usage" in metrics else []
    assert len(usage) == 2 * len(swaps)  # used and free per swap device


# --- root_path ----------------------------------------------------------------------------------


def fake_host_root(tmp_path: Path, files: dict[str, str], leave_out: tuple[str, ...] = ()) -> Path:
    """A root_path whose proc/ is this machine's procfs entry by entry (symbolic links), except
    for `files` written as given and the entries in `leave_out`."""
    proc = tmp_path / "hostfs" / "proc"
    proc.mkdir(parents=True)
    for entry in os.listdir("/proc"):
        if entry not in files and entry not in leave_out:
            (proc / entry).symlink_to(f"/proc/{entry}")
    for name, text in files.items():
        (proc / name).write_text(text)
    return proc.parent


def test_root_path_reads_procfs_and_file_systems_under_it(tmp_path, caplog):
    real_stat = Path("/proc/stat").read_text()
    btime = int(psutil.boot_time())
    stat = real_stat.replace(f"btime {btime}\n", f"btime {btime - 1000}\n")
    swaps = "Filename\tType\tSize\tUsed\tPriority\n/hostswap\tfile\t1048576\t262144\t-2\n"
    root = fake_host_root(tmp_path, {"stat": stat, "swaps": swaps}, leave_out=("diskstats",))
    (root / "dev").mkdir()
    (root / "dev" / "shm").symlink_to("/dev/shm")
    scrapers = {
        "system": {},
        "paging": {},
        "processes": {},
        "disk": {},
        "filesystem": {"include_virtual_filesystems": True},
    }
    r = receiver(root_path=str(root) + "/", scrapers=scrapers)
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        metrics = host_metrics(r.scrape())
        r.scrape()
    assert psutil.PROCFS_PATH == "/proc"  # given back after the reading
    # psutil read the host's /proc/stat (boot time) and the scraper its /proc/swaps.
    uptime = points(metrics["system.uptime"])[0][1]
    assert uptime == pytest.approx(time.time() - btime + 1000, abs=5)
    usage = by(metrics["system.paging.usage"], "device", "state")
    assert usage == {("/hostswap", "used"): 262144 * 1024, ("/hostswap", "free"): 786432 * 1024}
    assert sum(v for _, v in points(metrics["system.processes.count"])) > 1
    # Mount points are the host's; each is measured under the root: /dev/shm is there, /sys is not.
    measured = {a["mountpoint"] for a, _ in points(metrics["system.filesystem.usage"])}
    assert {"/", "/dev/shm"} <= measured
    assert "/sys" not in measured and "cannot read usage at /sys" in caplog.text
    # A scraper that cannot read its file fails alone, said once over both readings.
    assert "system.disk.io" not in metrics
    assert caplog.text.count("the disk scraper failed: FileNotFoundError") == 1


async def test_missing_root_path_fails_at_start_naming_it(tmp_path):
    for root, problem in (
        (tmp_path / "nothing", "is not a directory"),
        (tmp_path, "has no proc directory"),
    ):
        r = receiver(root_path=str(root), scrapers={"cpu": {}})
        with pytest.raises(ValueError, match=f"root_path '{root}' {problem}"):
            await r.start(StaticHost())
        await r.shutdown()


# --- the process scraper --------------------------------------------------------------------------


def own_process_options(**more) -> dict:
    return {"include": {"names": [psutil.Process().name()], "match_type": "strict"}, **more}


def test_process_scraper_finds_this_process_by_name_with_upstream_resource():
    me = psutil.Process()
    found = processes(scrape(process=own_process_options()))
    assert os.getpid() in found
    attributes, metrics = found[os.getpid()]
    assert attributes == {
        "process.pid": os.getpid(),
        "process.parent_pid": os.getppid(),
        "process.executable.name": me.name(),
        "process.executable.path": me.exe(),
        "process.command": me.cmdline()[0],
        "process.command_line": " ".join(me.cmdline()),
        "process.owner": pwd.getpwuid(os.getuid()).pw_name,
    }
    assert all(a["process.executable.name"] == me.name() for a, _ in found.values())
    assert set(metrics) == {
        "process.cpu.time",
        "process.memory.usage",
        "process.memory.virtual",
        "process.disk.io",
    }
    assert {s for (s,) in by(metrics["process.cpu.time"], "state")} == {"user", "system", "wait"}
    assert metrics["process.cpu.time"].unit == "s" and metrics["process.cpu.time"].sum.is_monotonic
    rss = points(metrics["process.memory.usage"])[0][1]
    assert rss == pytest.approx(me.memory_info().rss, rel=0.2)
    assert not metrics["process.memory.usage"].sum.is_monotonic
    io = by(metrics["process.disk.io"], "direction")
    assert set(io) == {("read",), ("write",)}
    start = metrics["process.cpu.time"].sum.data_points[0].start_time_unix_nano
    assert start == int(me.create_time() * 1e9)


def test_process_optional_metrics_and_resource_attribute_switches():
    on = (
        "process.cpu.utilization",
        "process.memory.utilization",
        "process.disk.operations",
        "process.paging.faults",
        "process.signals_pending",
        "process.threads",
        "process.open_file_descriptors",
        "process.context_switches",
        "process.uptime",
    )
    options = own_process_options(
        metrics={"process.cpu.time": {"enabled": False}, **{n: {"enabled": True} for n in on}},
        resource_attributes={
            "process.cgroup": {"enabled": True},
            "process.command_line": {"enabled": False},
        },
    )
    r = receiver(scrapers={"process": options})
    attributes, first = processes(r.scrape())[os.getpid()]
    assert "process.command_line" not in attributes
    assert attributes["process.cgroup"] == Path("/proc/self/cgroup").read_text().strip()
    assert "process.cpu.time" not in first and "process.cpu.utilization" not in first
    assert points(first["process.threads"])[0][1] == psutil.Process().num_threads()
    assert points(first["process.open_file_descriptors"])[0][1] >= 3
    assert set(by(first["process.context_switches"], "type")) == {("involuntary",), ("voluntary",)}
    assert by(first["process.paging.faults"], "type")[("minor",)] > 0
    assert 0 < points(first["process.memory.utilization"])[0][1] < 1
    assert points(first["process.uptime"])[0][1] == pytest.approx(
        time.time() - psutil.Process().create_time(), abs=5
    )
    assert first["process.signals_pending"].unit == "{signals}"
    assert set(by(first["process.disk.operations"], "direction")) == {("read",), ("write",)}
    sum(i * i for i in range(200_000))  # some CPU time between the readings
    _, second = processes(r.scrape())[os.getpid()]
    shares = by(second["process.cpu.utilization"], "state")
    assert set(shares) == {("user",), ("system",), ("wait",)}
    assert all(0 <= v <= 1 for v in shares.values()) and sum(shares.values()) > 0


def test_pending_signals_of_a_process():
    code = (
        "import signal, sys, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})\n"
        "print('blocked', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "blocked\n"
        # By the child's own name: the test process may be `pytest` rather than `python`.
        options = {
            "include": {"names": [psutil.Process(child.pid).name()], "match_type": "strict"},
            "metrics": {"process.signals_pending": {"enabled": True}},
        }

        def pending() -> float:
            _, metrics = processes(scrape(process=options))[child.pid]
            return points(metrics["process.signals_pending"])[0][1]

        assert pending() == 0
        child.send_signal(signal.SIGUSR1)
        child.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while pending() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pending() == 2
    finally:
        child.kill()
        child.wait()


def test_process_exclude_and_scrape_process_delay():
    name = psutil.Process().name()
    excluded = scrape(process={"exclude": {"names": [name], "match_type": "strict"}})
    assert os.getpid() not in processes(excluded)
    # Every process may be young (a fresh container): this one is made at least 4 s old.
    time.sleep(max(0.0, psutil.Process().create_time() + 4 - time.time()))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        young = processes(scrape(process={"scrape_process_delay": "2s"}))
        assert child.pid not in young and os.getpid() in young
        assert child.pid in processes(scrape(process={"scrape_process_delay": "0s"}))
    finally:
        child.kill()
        child.wait()


def test_every_process_in_bounded_time_and_vanishing_ones_skipped_quietly(caplog):
    r = receiver(
        scrapers={"process": {"mute_process_exe_error": True, "mute_process_io_error": True}}
    )
    stop = threading.Event()

    def churn() -> None:  # processes that start and end while the scraper walks them
        while not stop.is_set():
            subprocess.run(["true"], check=False)

    spawner = threading.Thread(target=churn)
    spawner.start()
    try:
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            for _ in range(3):
                started = time.monotonic()
                found = processes(r.scrape())
                assert time.monotonic() - started < 5
    finally:
        stop.set()
        spawner.join()
    assert len(found) >= len(psutil.pids()) * 0.8
    assert os.getpid() in found
    assert "failed" not in caplog.text and "No such process" not in caplog.text


def test_owner_of_an_unknown_uid_is_reported_unless_muted(caplog):
    uid = next(u for u in range(54321, 60000) if not _has_user(u))
    child = subprocess.Popen(["sleep", "30"], user=uid)
    try:
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            found = processes(
                scrape(process={"include": {"names": ["sleep"], "match_type": "strict"}})
            )
        attributes, _ = found[child.pid]
        assert "process.owner" not in attributes
        assert f"no user has uid {uid}" in caplog.text and "mute_process_user_error" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            muted = {
                "include": {"names": ["sleep"], "match_type": "strict"},
                "mute_process_user_error": True,
            }
            assert child.pid in processes(scrape(process=muted))
        assert "no user has uid" not in caplog.text
    finally:
        child.kill()
        child.wait()


def _has_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# --- the loop -------------------------------------------------------------------------------------


async def test_readings_repeat_every_interval_and_cumulative_sums_grow():
    sink = SinkConsumer()
    r = receiver(sink, collection_interval="100ms", initial_delay="0s", scrapers={"cpu": None})
    await r.start(StaticHost())
    try:
        async with asyncio.timeout(10):
            while len(sink.batches) < 2:
                await asyncio.sleep(0.05)
    finally:
        await r.shutdown()
    first, second = (
        by(host_metrics(b)["system.cpu.time"], "cpu", "state") for b in sink.batches[:2]
    )
    assert all(second[key] >= first[key] for key in first)
