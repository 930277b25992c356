"""Span attributes that carry what only X-Ray documents have, written by the `awsxray` receiver
and read by the `awsxray` exporter, so that segments pass through a collector unchanged."""

# The keys of the span attributes that were the segment's annotations (a list of strings).
ANNOTATIONS = "aws.xray.annotations"
# One attribute per metadata namespace, its value the namespace's JSON.
METADATA_PREFIX = "aws.xray.metadata."
# The segment was sent before it ended (in_progress); its span ends where it starts.
IN_PROGRESS = "aws.xray.inprogress"
