"""What coldtail runs inside AWS Lambda: the collector as an external extension (`extension/`) and
the init reports the Telemetry API receiver hands to the coldstart processor."""
