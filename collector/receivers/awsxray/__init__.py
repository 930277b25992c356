"""awsxray receiver: segments from the X-Ray SDKs, as the X-Ray daemon takes them, as spans."""

from collector.receivers.awsxray.receiver import factory

__all__ = ["factory"]
