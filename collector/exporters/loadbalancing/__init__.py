"""loadbalancing exporter: each trace (or service, resource, metric, metric stream, or set of
attributes) to one of several OTLP/gRPC backends, as the OTel Collector's loadbalancingexporter
routes, with its config.

Modules: `config.py` (the options), `routing.py` (a batch cut per backend by routing key),
`ring.py` (rendezvous hashing: the owner of each key), `resolver.py` (the backends: static or
DNS), `member.py` (OTLP/gRPC to one backend) and `exporter.py` (the component: queue, routing,
retries that route again when the backends change).
"""

from collector.exporters.loadbalancing.config import Config
from collector.exporters.loadbalancing.exporter import LoadBalancingExporter, factory

__all__ = ["Config", "LoadBalancingExporter", "factory"]
