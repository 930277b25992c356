"""The span attributes coldtail's components read and write beyond the semantic conventions'
own: the collector's side of the attribute contract with the instrumentation, whose side is
instrumentation/attributes.py (the two are checked to agree). docs/ARCHITECTURE.md tables who
writes and who reads each."""

FAAS_COLDSTART = "faas.coldstart"
FAAS_INVOCATION_ID = "faas.invocation_id"

COLD_START = "coldtail.cold_start"
COLD_START_SOURCE = "coldtail.cold_start.source"
SOURCE_INSTRUMENTATION = "instrumentation"
INIT_TYPE = "coldtail.init_type"
INIT_DURATION_MS = "coldtail.init_duration_ms"
TIMEOUT = "coldtail.timeout"
SYNTHETIC = "coldtail.synthetic"
LATENCY_TAIL = "coldtail.latency.tail"
LATENCY_THRESHOLD_MS = "coldtail.latency.threshold_ms"
