"""The `network` scraper: traffic per interface, TCP connections per state and the conntrack
table. Interfaces and connections are those of the collector's network namespace (a
container sees the host's with host networking)."""

from __future__ import annotations

from collections import Counter

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    HostFS,
    InterfaceMatch,
    Points,
    Reading,
    ScraperConfig,
    Switch,
    cumulative,
    describe_switches,
    included,
    updown,
)

METRICS = {
    "system.network.io": cumulative("By", "Bytes transmitted and received."),
    "system.network.packets": cumulative("{packets}", "Packets transferred."),
    "system.network.errors": cumulative("{errors}", "Errors encountered."),
    "system.network.dropped": cumulative("{packets}", "Packets dropped."),
    "system.network.connections": updown(
        "{connections}", "TCP connections (protocol tcp) by state, IPv4 and IPv6."
    ),
    "system.network.conntrack.count": updown(
        "{entries}", "Entries in the conntrack table.", on=False
    ),
    "system.network.conntrack.max": updown(
        "{entries}", "The limit of entries in the conntrack table.", on=False
    ),
}

# Every state upstream reports, zero when no connection is in it.
TCP_STATES = (
    "CLOSE_WAIT",
    "CLOSE",
    "CLOSING",
    "DELETE",
    "ESTABLISHED",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "LAST_ACK",
    "LISTEN",
    "SYN_SENT",
    "SYN_RECV",
    "TIME_WAIT",
)
# The kernel's state numbers in /proc/net/tcp (include/net/tcp_states.h).
_KERNEL_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT_1",
    "05": "FIN_WAIT_2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "SYN_RECV",  # a request socket (NEW_SYN_RECV)
}
_PSUTIL_STATES = {"FIN_WAIT1": "FIN_WAIT_1", "FIN_WAIT2": "FIN_WAIT_2", "NONE": "CLOSE"}


class Config(ScraperConfig):
    """system.network.io, .packets, .errors and .dropped per interface (device) and
    direction, system.network.connections per TCP state; optional conntrack metrics."""

    NAME = "network"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )
    include: InterfaceMatch = Field(default_factory=InterfaceMatch)
    """Only these interfaces (`interfaces` and `match_type`); default all."""
    exclude: InterfaceMatch = Field(default_factory=InterfaceMatch)
    """Not these interfaces (`interfaces` and `match_type`)."""


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        self._interfaces(out)
        if out.on("system.network.connections"):
            counts = _tcp_states(self.host) if LINUX else _psutil_tcp_states()
            out.emit(
                "system.network.connections",
                [({"protocol": "tcp", "state": s}, counts.get(s, 0)) for s in _states(counts)],
            )
        for name, file in (
            ("system.network.conntrack.count", "nf_conntrack_count"),
            ("system.network.conntrack.max", "nf_conntrack_max"),
        ):
            if out.on(name):
                try:
                    value = int(self.host.read_proc(f"sys/net/netfilter/{file}").strip())
                except (OSError, ValueError) as e:
                    out.problem("conntrack", f"cannot read the conntrack table's {file}: {e}")
                    continue
                out.emit(name, [({}, value)])

    def _interfaces(self, out) -> None:
        counters = psutil.net_io_counters(pernic=True, nowrap=False) or {}
        series: dict[str, Points] = {"io": [], "packets": [], "errors": [], "dropped": []}
        for device, c in counters.items():
            if not included(device, self.config.include, self.config.exclude):
                continue
            for direction, values in (
                ("transmit", (c.bytes_sent, c.packets_sent, c.errout, c.dropout)),
                ("receive", (c.bytes_recv, c.packets_recv, c.errin, c.dropin)),
            ):
                labels = {"device": device, "direction": direction}
                for kind, value in zip(series, values, strict=True):
                    series[kind].append((labels, value))
        for kind, points in series.items():
            out.emit(f"system.network.{kind}", points)


def _states(counts: Counter[str]) -> list[str]:
    return list(TCP_STATES) + sorted(set(counts) - set(TCP_STATES))


def _tcp_states(host: HostFS) -> Counter[str]:
    counts: Counter[str] = Counter()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = host.read_proc(table).splitlines()[1:]
        except FileNotFoundError:  # no IPv6
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3:
                counts[_KERNEL_STATES.get(fields[3].upper(), "UNKNOWN")] += 1
    return counts


def _psutil_tcp_states() -> Counter[str]:
    return Counter(
        _PSUTIL_STATES.get(c.status, c.status) for c in psutil.net_connections(kind="tcp")
    )
