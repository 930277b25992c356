"""metricstransform processor: renames metrics, changes their labels and label values,
scales, toggles and aggregates their points, and combines or groups metrics, with the
configuration of the OTel Collector contrib processor of that name."""

from collector.processors.metricstransform.processor import factory

__all__ = ["factory"]
