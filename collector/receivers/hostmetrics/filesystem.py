"""The `filesystem` scraper: space and inodes per mounted file system.

Mounts come from the host's mount table (under `root_path`, the host's init process's, so
the host's mounts rather than the container's); each is measured with statvfs at its path
under `root_path` and reported under the host's mount point."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    DeviceMatch,
    FsTypeMatch,
    HostFS,
    MountPointMatch,
    Points,
    Reading,
    ScraperConfig,
    Switch,
    describe_switches,
    gauge,
    included,
    updown,
)

METRICS = {
    "system.filesystem.usage": updown(
        "By", "File system bytes by state (used, free, reserved for root)."
    ),
    "system.filesystem.inodes.usage": updown("{inodes}", "File system inodes by state."),
    "system.filesystem.utilization": gauge(
        "1", "Share of the file system's bytes in use: used / (used + free).", on=False
    ),
}

_OCTAL = re.compile(r"\\([0-7]{3})")


class Config(ScraperConfig):
    """system.filesystem.usage and system.filesystem.inodes.usage per device, mode,
    mountpoint and type; optional system.filesystem.utilization."""

    NAME = "filesystem"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )
    include_devices: DeviceMatch = Field(default_factory=DeviceMatch)
    """Only file systems on these devices (`devices` and `match_type`); default all."""
    exclude_devices: DeviceMatch = Field(default_factory=DeviceMatch)
    """Not the file systems on these devices."""
    include_fs_types: FsTypeMatch = Field(default_factory=FsTypeMatch)
    """Only these file system types (`fs_types` and `match_type`); default all."""
    exclude_fs_types: FsTypeMatch = Field(default_factory=FsTypeMatch)
    """Not these file system types."""
    include_mount_points: MountPointMatch = Field(default_factory=MountPointMatch)
    """Only these mount points (`mount_points` and `match_type`); default all."""
    exclude_mount_points: MountPointMatch = Field(default_factory=MountPointMatch)
    """Not these mount points."""
    include_virtual_filesystems: bool = False
    """Also file systems without a physical device: tmpfs, proc, overlay, ... (default
    false)."""

    def keeps(self, mount: Mount) -> bool:
        return (
            included(mount.device, self.include_devices, self.exclude_devices)
            and included(mount.fstype, self.include_fs_types, self.exclude_fs_types)
            and included(mount.mountpoint, self.include_mount_points, self.exclude_mount_points)
        )


@dataclass(frozen=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def mode(self) -> str:
        return "rw" if "rw" in self.options else "ro" if "ro" in self.options else "unknown"


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        virtual = self.config.include_virtual_filesystems
        mounts = _linux_mounts(self.host, virtual) if LINUX else _psutil_mounts(virtual)
        usage: Points = []
        inodes: Points = []
        shares: Points = []
        for mount in mounts:
            if not self.config.keeps(mount):
                continue
            try:
                st = os.statvfs(self.host.path(mount.mountpoint))
            except OSError as e:
                out.problem("usage", f"cannot read usage at {mount.mountpoint}: {e}")
                continue
            labels = {
                "device": mount.device,
                "mode": mount.mode,
                "mountpoint": mount.mountpoint,
                "type": mount.fstype,
            }
            total, free, available = (
                n * st.f_frsize for n in (st.f_blocks, st.f_bfree, st.f_bavail)
            )
            used = total - free
            for state, value in (
                ("used", used),
                ("free", available),
                ("reserved", free - available),
            ):
                usage.append(({**labels, "state": state}, value))
            for state, value in (("used", st.f_files - st.f_ffree), ("free", st.f_ffree)):
                inodes.append(({**labels, "state": state}, value))
            if used + available > 0:
                shares.append((labels, used / (used + available)))
        out.emit("system.filesystem.usage", usage)
        out.emit("system.filesystem.inodes.usage", inodes)
        out.emit("system.filesystem.utilization", shares)


def _linux_mounts(host: HostFS, virtual: bool) -> list[Mount]:
    """The mount table, one entry per mount point (the last mount over a path hides the
    earlier ones); without `virtual`, only file systems on a device."""
    physical = set()
    for line in host.read_proc("filesystems").splitlines():
        kind, _, name = line.rpartition("\t")
        if kind.strip() != "nodev":
            physical.add(name.strip())
    mounts: dict[str, Mount] = {}
    for line in _mount_table(host).splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype = (_unescape(f) for f in fields[:3])
        if not virtual and (device in ("", "none") or fstype not in physical):
            continue
        mounts[mountpoint] = Mount(device, mountpoint, fstype, tuple(fields[3].split(",")))
    return list(mounts.values())


def _mount_table(host: HostFS) -> str:
    # Under a root_path, the host's init process shows the host's mounts; "self" would be
    # this container's.
    if host.root:
        try:
            return host.read_proc("1/mounts")
        except OSError:
            pass
    return host.read_proc("self/mounts")


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as octal (\\040)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def _psutil_mounts(virtual: bool) -> list[Mount]:
    return [
        Mount(p.device, p.mountpoint, p.fstype, tuple(p.opts.split(",")))
        for p in psutil.disk_partitions(all=virtual)
    ]
