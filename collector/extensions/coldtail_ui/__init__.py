"""The `coldtail_ui` extension: a live page of cold starts and the latency tail, and the JSON
API behind it, served by the collector itself (no other service, no CDN: the page's assets are
in `static/`).

    extensions:
      coldtail_ui: {endpoint: "127.0.0.1:13180"}
    exporters:
      coldtail_ui: {}           # feeds the page from a traces pipeline
    service:
      extensions: [coldtail_ui]
      pipelines:
        traces: {receivers: [otlp], processors: [coldstart, tail_latency], exporters: [coldtail_ui]}

The page shows what the `coldtail_ui` exporters of the service record (collector.core.live_view)
and the pipelines' own counters, from this JSON API (durations in ms, times in unix ms):

    GET /api/summary    {generated_at_ms, window_s, routes_dropped, recording,
                         services: [{service, routes: [{route, requests, errors, cold, cold_rate,
                           warm, cold_latency, all: {count, p50, p95, p99},
                           init_ms: {count, p50, max} | null,
                           histogram: {bounds_ms, warm, cold}}]}]}
                         (a histogram has one count per bound and one above the last)
    GET /api/traces?limit=N  {traces: [{trace_id, service, route, reasons (cold, p95, p99,
                         error), start_unix_ms, duration_ms, spans: [{span_id, parent_span_id,
                         name, service, kind, start_ms (from the trace's start), duration_ms,
                         status (ok, error), cold, init}]}]}, newest first
    GET /api/pipelines  {pipelines: [{id, receivers, processors, exporters}],
                         components: [{kind, id, signal, pipeline?, accepted, refused,
                         incoming, outgoing, sent, failed, enqueue_failed, queue_size,
                         queue_capacity (those that apply)}]}
    GET /api/events     server-sent events: `summary`, the /api/summary document, every
                        `refresh`
"""

from collector.core.component import Factory, Kind
from collector.extensions.coldtail_ui.server import ColdtailUI, Config

factory = Factory(
    kind=Kind.EXTENSION,
    type="coldtail_ui",
    config=Config,
    create=ColdtailUI,
    signals={},
    description="A live page of cold starts and the latency tail per route, with its JSON API.",
)
