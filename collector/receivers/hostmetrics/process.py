"""The `process` scraper: CPU, memory, disk and more per process, each process its own
resource (process.pid, process.executable.name, ...), its sums starting at its start.

What cannot be read is reported as upstream does, by kind, and each `mute_process_*_error`
option silences one kind: a process whose name cannot be read is skipped, one whose
executable path cannot be read (kernel threads have none) is kept without it. Processes that
end during the walk are skipped silently."""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from typing import Any

import psutil
from pydantic import Field, field_validator

from collector.core.config_types import Duration
from collector.receivers.hostmetrics.common import (
    LINUX,
    HostFS,
    NameMatch,
    Output,
    Reading,
    ScraperConfig,
    Switch,
    check_resource_attributes,
    cumulative,
    describe_switches,
    gauge,
    included,
    updown,
)

METRICS = {
    "process.cpu.time": cumulative("s", "CPU seconds by state (user, system, wait).", double=True),
    "process.cpu.utilization": gauge(
        "1",
        "Share of all logical CPUs' time the process used since the last reading, by state "
        "(0 to 1); none on the first reading.",
        on=False,
    ),
    "process.memory.usage": updown("By", "Physical memory in use (resident set size)."),
    "process.memory.virtual": updown("By", "Virtual memory size."),
    "process.memory.utilization": gauge(
        "1", "Share of the host's physical memory in use by the process (0 to 1).", on=False
    ),
    "process.disk.io": cumulative("By", "Disk bytes transferred, by direction."),
    "process.disk.operations": cumulative(
        "{operations}", "Read and write calls, by direction.", on=False
    ),
    "process.paging.faults": cumulative(
        "{faults}", "Page faults by type (major, minor).", on=False
    ),
    "process.signals_pending": updown("{signals}", "Signals pending for the process.", on=False),
    "process.threads": updown("{threads}", "Number of threads.", on=False),
    "process.open_file_descriptors": updown(
        "{count}", "Number of open file descriptors.", on=False
    ),
    "process.handles": updown("{count}", "Handles held (Windows only; never here).", on=False),
    "process.context_switches": cumulative(
        "{count}", "Context switches by type (involuntary, voluntary).", on=False
    ),
    "process.uptime": gauge("s", "Seconds since the process started.", on=False),
}

RESOURCE_ATTRIBUTES = {
    "process.pid": True,
    "process.parent_pid": True,
    "process.executable.name": True,
    "process.executable.path": True,
    "process.command": True,
    "process.command_line": True,
    "process.owner": True,
    "process.cgroup": False,
}


class Config(ScraperConfig):
    """Per process: process.cpu.time, process.memory.usage, process.memory.virtual and
    process.disk.io, more optional; one resource per process."""

    NAME = "process"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )
    resource_attributes: dict[str, Switch] = Field(
        default_factory=dict,
        description=describe_switches("resource attribute", RESOURCE_ATTRIBUTES),
    )
    include: NameMatch = Field(default_factory=NameMatch)
    """Only processes with these executable names (`names` and `match_type`); default all."""
    exclude: NameMatch = Field(default_factory=NameMatch)
    """Not processes with these executable names (`names` and `match_type`)."""
    mute_process_all_errors: bool = False
    """Log nothing about processes that cannot be read (default false)."""
    mute_process_name_error: bool = False
    """Log nothing about processes whose name cannot be read; they are skipped either way
    (default false)."""
    mute_process_exe_error: bool = False
    """Log nothing about processes whose executable path cannot be read, like kernel threads;
    they are reported without process.executable.path (default false)."""
    mute_process_io_error: bool = False
    """Log nothing about processes whose disk I/O cannot be read (default false)."""
    mute_process_user_error: bool = False
    """Log nothing about processes whose owner's uid has no user name here, as for users of
    another container; they are reported without process.owner (default false)."""
    mute_process_cgroup_error: bool = False
    """Log nothing about processes whose cgroup cannot be read (read only with the
    process.cgroup attribute on); they are skipped either way (default false)."""
    scrape_process_delay: Duration = Field(0.0, ge=0)
    """Skip processes younger than this (default 0s: every process)."""

    @field_validator("resource_attributes", mode="before")
    @classmethod
    def _known_attributes(cls, value: object) -> object:
        return check_resource_attributes(value, RESOURCE_ATTRIBUTES, cls.NAME)

    def attribute_on(self, name: str) -> bool:
        switch = self.resource_attributes.get(name)
        if switch is not None and switch.enabled is not None:
            return switch.enabled
        return RESOURCE_ATTRIBUTES[name]

    def muted(self, kind: str) -> bool:
        return self.mute_process_all_errors or bool(
            getattr(self, f"mute_process_{kind}_error", False)
        )


@dataclass
class _CpuSample:
    started: float  # the process's create time, telling a reused pid apart
    at: float
    times: dict[str, float]


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host
        self.cpu_samples: dict[int, _CpuSample] = {}  # the last reading's CPU times, per pid

    def scrape(self, reading: Reading) -> None:
        walk = _Walk(self, reading)
        for pid in psutil.pids():
            try:
                walk.process(pid)
            except psutil.NoSuchProcess:  # ended meanwhile (zombies included)
                continue
        self.cpu_samples = {p: s for p, s in self.cpu_samples.items() if p in walk.seen}


class _Walk:
    """One reading over every process; caches what all processes share."""

    def __init__(self, scraper: Scraper, reading: Reading) -> None:
        self.scraper, self.config, self.reading = scraper, scraper.config, reading
        self.now = reading.now_ns / 1e9
        self.cores = psutil.cpu_count(logical=True) or 1
        self.total_memory = psutil.virtual_memory().total
        self.users: dict[int, str | None] = {}
        self.seen: set[int] = set()

    def problem(self, kind: str, message: str) -> None:
        if self.config.muted(kind):
            return
        option = f"mute_process_{kind}_error"
        hint = option if hasattr(self.config, option) else "mute_process_all_errors"
        self.reading.problem("process", kind, f"{message}; {hint}: true silences these")

    def process(self, pid: int) -> None:
        process = psutil.Process(pid)
        with process.oneshot():
            resource = self._resource(process)
            if resource is None:
                return
            self.seen.add(pid)
            started = process.create_time()
            out = self.reading.resource(self.config, resource, int(started * 1e9))
            self._metrics(process, out, started, resource["process.executable.name"])

    def _resource(self, process: psutil.Process) -> dict[str, Any] | None:
        """The process's resource attributes, or None when it is not to be reported."""
        config, pid = self.config, process.pid
        try:
            name = process.name()
        except psutil.AccessDenied as e:
            self.problem("name", f"cannot read the name of pid {pid}: {_why(e)}")
            return None
        if not included(name, config.include, config.exclude):
            return None
        if self.now - process.create_time() < config.scrape_process_delay:
            return None
        attributes: dict[str, Any] = {"process.pid": pid, "process.executable.name": name}
        if config.attribute_on("process.parent_pid"):
            attributes["process.parent_pid"] = process.ppid()
        attributes["process.executable.path"] = self._exe(process)
        if config.attribute_on("process.cgroup"):
            try:
                attributes["process.cgroup"] = self.scraper.host.read_proc(f"{pid}/cgroup").strip()
            except OSError as e:
                self.problem("cgroup", f"cannot read the cgroup of {name!r} (pid {pid}): {e}")
                return None
        if config.attribute_on("process.command") or config.attribute_on("process.command_line"):
            attributes.update(self._command(process, name))
        if config.attribute_on("process.owner"):
            attributes["process.owner"] = self._owner(process, name)
        return {
            key: value
            for key, value in attributes.items()
            if value not in (None, "") and config.attribute_on(key)
        }

    def _command(self, process: psutil.Process, name: str) -> dict[str, str]:
        try:
            cmdline = process.cmdline()
        except psutil.AccessDenied as e:
            self.problem(
                "command", f"cannot read the command of {name!r} (pid {process.pid}): {_why(e)}"
            )
            return {}
        if not cmdline:
            return {}
        return {"process.command": cmdline[0], "process.command_line": " ".join(cmdline)}

    def _exe(self, process: psutil.Process) -> str | None:
        try:
            exe = process.exe()
        except psutil.AccessDenied as e:
            self.problem("exe", f"cannot read the executable of pid {process.pid}: {_why(e)}")
            return None
        if not exe:
            self.problem("exe", f"pid {process.pid} has no executable path (a kernel thread)")
        return exe

    def _owner(self, process: psutil.Process, name: str) -> str | None:
        uid = process.uids().real
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = None
        if self.users[uid] is None:
            self.problem(
                "user", f"no user has uid {uid}, the owner of {name!r} (pid {process.pid})"
            )
        return self.users[uid]

    def _metrics(self, process: psutil.Process, out: Output, started: float, name: str) -> None:
        for kind, record in (
            ("cpu", self._cpu_metrics),
            ("memory", self._memory),
            ("io", self._io),
            ("paging", self._faults),
            ("threads", self._counts),
            ("signals", self._signals),
        ):
            try:
                record(process, out, started)
            except (FileNotFoundError, ProcessLookupError):  # its /proc entry went away
                raise psutil.NoSuchProcess(process.pid) from None
            except (psutil.AccessDenied, OSError) as e:
                self.problem(
                    kind, f"cannot read the {kind} of {name!r} (pid {process.pid}): {_why(e)}"
                )
        out.emit("process.uptime", [({}, self.now - started)])

    def _cpu_metrics(self, process: psutil.Process, out: Output, started: float) -> None:
        if not (out.on("process.cpu.time") or out.on("process.cpu.utilization")):
            return
        t = process.cpu_times()
        times = {"user": t.user, "system": t.system}
        if hasattr(t, "iowait"):
            times["wait"] = t.iowait
        out.emit("process.cpu.time", [({"state": s}, v) for s, v in times.items()])
        previous = self.scraper.cpu_samples.get(process.pid)
        self.scraper.cpu_samples[process.pid] = _CpuSample(started, self.now, times)
        if previous is None or previous.started != started or self.now <= previous.at:
            return
        scale = (self.now - previous.at) * self.cores
        out.emit(
            "process.cpu.utilization",
            [({"state": s}, (v - previous.times.get(s, 0.0)) / scale) for s, v in times.items()],
        )

    def _memory(self, process: psutil.Process, out: Output, started: float) -> None:
        if not any(out.on(f"process.memory.{m}") for m in ("usage", "virtual", "utilization")):
            return
        memory = process.memory_info()
        out.emit("process.memory.usage", [({}, memory.rss)])
        out.emit("process.memory.virtual", [({}, memory.vms)])
        out.emit("process.memory.utilization", [({}, memory.rss / self.total_memory)])

    def _io(self, process: psutil.Process, out: Output, started: float) -> None:
        if not (out.on("process.disk.io") or out.on("process.disk.operations")):
            return
        io = process.io_counters()
        out.emit(
            "process.disk.io",
            [({"direction": "read"}, io.read_bytes), ({"direction": "write"}, io.write_bytes)],
        )
        out.emit(
            "process.disk.operations",
            [({"direction": "read"}, io.read_count), ({"direction": "write"}, io.write_count)],
        )

    def _faults(self, process: psutil.Process, out: Output, started: float) -> None:
        if not (LINUX and out.on("process.paging.faults")):
            return
        # /proc/<pid>/stat after the command's closing parenthesis: state is field 0,
        # minflt field 7, majflt field 9.
        stat = self.scraper.host.read_proc(f"{process.pid}/stat")
        fields = stat[stat.rindex(")") + 2 :].split()
        minor, major = int(fields[7]), int(fields[9])
        out.emit("process.paging.faults", [({"type": "major"}, major), ({"type": "minor"}, minor)])

    def _counts(self, process: psutil.Process, out: Output, started: float) -> None:
        if out.on("process.threads"):
            out.emit("process.threads", [({}, process.num_threads())])
        if out.on("process.open_file_descriptors") and hasattr(process, "num_fds"):
            out.emit("process.open_file_descriptors", [({}, process.num_fds())])
        if out.on("process.context_switches"):
            switches = process.num_ctx_switches()
            out.emit(
                "process.context_switches",
                [
                    ({"type": "involuntary"}, switches.involuntary),
                    ({"type": "voluntary"}, switches.voluntary),
                ],
            )

    def _signals(self, process: psutil.Process, out: Output, started: float) -> None:
        if not (LINUX and out.on("process.signals_pending")):
            return
        # SigPnd (to the thread) and ShdPnd (to the process) are masks of pending signals.
        pending = 0
        for line in self.scraper.host.read_proc(f"{process.pid}/status").splitlines():
            key, _, value = line.partition(":")
            if key in ("SigPnd", "ShdPnd"):
                pending |= int(value.strip(), 16)
        out.emit("process.signals_pending", [({}, pending.bit_count())])


def _why(error: Exception) -> str:
    if isinstance(error, psutil.AccessDenied):
        return error.msg or "permission denied"
    return str(error)
