"""nats receiver: gateways consuming the partitions agents publish to a NATS JetStream stream."""

from collector.receivers.nats.receiver import factory

__all__ = ["factory"]
