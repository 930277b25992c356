"""The `hostmetrics` receiver: the host's (or, with `root_path`, the container host's) CPU,
memory, load, disk, file systems, network, paging, processes and uptime every
`collection_interval`, under the OTel Collector's metric names, units, attributes and default
switches (semantic conventions for system and process metrics).

    hostmetrics:
      collection_interval: 10s
      root_path: /hostfs
      scrapers:
        cpu:
          metrics: {system.cpu.utilization: {enabled: true}}
        filesystem:
          exclude_fs_types: {fs_types: [overlay, tmpfs], match_type: strict}
        process:
          include: {names: [nginx], match_type: strict}

Modules: `common.py` (metric tables, switches, filters, the host's files, the reading), one
module per scraper (`cpu.py`, `disk.py`, `filesystem.py`, `load.py`, `memory.py`,
`network.py`, `paging.py`, `processes.py`, `process.py`, `system.py`), `receiver.py` (the
options and the scrape loop).
"""

from collector.core.component import Factory, Kind, Stability
from collector.core.signals import Signal
from collector.receivers.hostmetrics.receiver import Config, HostMetricsReceiver

__all__ = ["Config", "HostMetricsReceiver", "factory"]

factory = Factory(
    kind=Kind.RECEIVER,
    type="hostmetrics",
    aliases=("host_metrics",),
    config=Config,
    create=HostMetricsReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Reads the host's CPU, memory, load, disks, file systems, network, paging, "
    "processes (in all and one by one) and uptime.",
)
