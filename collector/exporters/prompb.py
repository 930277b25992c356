"""The Prometheus remote-write 1.0 messages (package `prometheus`, prompb/remote.proto and
types.proto), built from a descriptor at import time so no generated code is needed.

Only what remote write 1.0 sends is declared: WriteRequest, TimeSeries, Label and Sample. The
messages live in a private descriptor pool, so another copy of prompb in the process cannot
clash with them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message(file: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple]) -> None:
    message = file.message_type.add(name=name)
    for number, (field_name, type_, label, type_name) in enumerate(fields, start=1):
        message.field.add(
            name=field_name, number=number, type=type_, label=label, type_name=type_name
        )


def _build() -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto(
        name="coldtail/prompb.proto", package="prometheus", syntax="proto3"
    )
    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _message(
        file,
        "WriteRequest",
        [("timeseries", _F.TYPE_MESSAGE, repeated, ".prometheus.TimeSeries")],
    )
    _message(
        file,
        "TimeSeries",
        [
            ("labels", _F.TYPE_MESSAGE, repeated, ".prometheus.Label"),
            ("samples", _F.TYPE_MESSAGE, repeated, ".prometheus.Sample"),
        ],
    )
    _message(
        file,
        "Label",
        [("name", _F.TYPE_STRING, optional, None), ("value", _F.TYPE_STRING, optional, None)],
    )
    _message(
        file,
        "Sample",
        [("value", _F.TYPE_DOUBLE, optional, None), ("timestamp", _F.TYPE_INT64, optional, None)],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool


_pool = _build()


def _class(name: str) -> Any:
    # A class made at run time: the checker cannot know its fields.
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"prometheus.{name}"))


WriteRequest = _class("WriteRequest")
TimeSeries = _class("TimeSeries")
Label = _class("Label")
Sample = _class("Sample")
