"""The pipeline machinery every component builds on: component contracts, configuration, the
pipeline graph and its running, the telemetry data model and the collector's own telemetry."""
