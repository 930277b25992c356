"""zipkin receiver: spans from Zipkin tracers and the OpenTelemetry Zipkin exporters, as the
OTel Collector's `zipkin` receiver takes them, translated to OTLP as its Zipkin translators do.

Modules: `receiver.py` (the component: `POST /api/v1/spans` and `/api/v2/spans`), the decoders
(`json_codec.py`: v1 and v2 JSON, `proto.py`: v2 protobuf, `thrift_codec.py`: v1 Thrift) into
one model per Zipkin version (`model.py`), and the translations to OTLP (`translate.py`: v2,
`translate_v1.py`: v1).
"""

from collector.receivers.zipkin.receiver import Config, ZipkinReceiver, factory

__all__ = ["Config", "ZipkinReceiver", "factory"]
