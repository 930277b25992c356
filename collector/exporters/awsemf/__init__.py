"""awsemf exporter: metrics as CloudWatch embedded metric format."""

from collector.exporters.awsemf.exporter import factory

__all__ = ["factory"]
