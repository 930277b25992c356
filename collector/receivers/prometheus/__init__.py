"""The `prometheus` receiver: scrapes Prometheus and OpenMetrics endpoints as Prometheus does,
from the same `scrape_configs`, and turns each scrape into OTLP metrics.

    prometheus:
      config:
        scrape_configs:
          - job_name: app
            scrape_interval: 15s
            static_configs: [{targets: ["127.0.0.1:9100"]}]

Modules: `config.py` (the options), `targets.py` (discovery and target labels), `relabel.py`,
`translate.py` (exposition to OTLP, start times, staleness), `receiver.py` (the scrape loops).
"""

from collector.core.component import Factory, Kind, Stability
from collector.core.signals import Signal
from collector.receivers.prometheus.config import Config
from collector.receivers.prometheus.receiver import PrometheusReceiver

factory = Factory(
    kind=Kind.RECEIVER,
    type="prometheus",
    config=Config,
    create=PrometheusReceiver,
    signals={Signal.METRICS: Stability.BETA},
    description="Scrapes Prometheus and OpenMetrics endpoints from Prometheus scrape_configs "
    "(static, file and HTTP discovery, relabeling) into OTLP metrics.",
)
