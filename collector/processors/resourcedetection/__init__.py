"""resourcedetection processor: resource attributes of where the collector runs."""

from collector.processors.resourcedetection.processor import factory

__all__ = ["factory"]
