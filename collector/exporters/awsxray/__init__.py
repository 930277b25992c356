"""awsxray exporter: spans to AWS X-Ray as segment documents."""

from collector.exporters.awsxray.exporter import factory

__all__ = ["factory"]
