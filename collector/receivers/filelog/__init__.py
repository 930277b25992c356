"""filelog receiver: tails files into log records, as the OTel Collector's filelogreceiver.

`config.py` (the config), `matching.py` (include/exclude globs), `fileset.py` (fingerprints,
readers, rotation, checkpoints), `split.py` (lines and multiline entries), `entry.py` (entries
and fields), `operators.py` (the operators), `expr.py` (their expressions), `timeparse.py` and
`severity.py` (what parsers embed), `goregex.py` (Go regular expressions), `receiver.py` (the
component)."""

from collector.receivers.filelog.receiver import factory

__all__ = ["factory"]
