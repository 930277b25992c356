"""The span and resource attributes the instrumentation writes beyond the semantic conventions'
own: its side of the attribute contract with the collector, whose side is
collector/core/attributes.py (the two are checked to agree)."""

FAAS_COLDSTART = "faas.coldstart"
FAAS_INVOCATION_ID = "faas.invocation_id"

COLD_START = "coldtail.cold_start"
COLD_START_SOURCE = "coldtail.cold_start.source"
SOURCE_INSTRUMENTATION = "instrumentation"
INIT_TYPE = "coldtail.init_type"
INIT_DURATION_MS = "coldtail.init_duration_ms"
TIMEOUT = "coldtail.timeout"
# A container's entry span: milliseconds between the process's start and the request's.
TIME_SINCE_START_MS = "coldtail.time_since_start_ms"
# The spans of the modules the function's init imported, named by `IMPORT_MODULE`.
IMPORT_SPAN = "coldtail.import"
IMPORT_MODULE = "coldtail.import.module"
