"""tail_sampling processor: keeps or drops whole traces by policies once their spans are in."""

from collector.processors.tail_sampling.processor import factory

__all__ = ["factory"]
