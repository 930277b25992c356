"""jaeger receiver: spans from Jaeger clients, agents and exporters, as the OTel Collector's
`jaeger` receiver takes them, translated to OTLP as its Jaeger translator does.

Modules: `config.py` (the `protocols` block), `receiver.py` (the component), one per protocol
(`grpc_server.py`: `jaeger.api_v2.CollectorService/PostSpans`; `thrift_http.py`:
`POST /api/traces`; `udp_agent.py`: the agent's `emitBatch` over UDP, compact or binary), the
decoders (`proto.py`, `thrift_codec.py`) into one model (`model.py`), and `translate.py`
(Jaeger to OTLP).
"""

from collector.receivers.jaeger.receiver import factory

__all__ = ["factory"]
