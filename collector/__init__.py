"""coldtail collector: an OpenTelemetry Collector-compatible pipeline in Python."""
