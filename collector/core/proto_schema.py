"""Protobuf message classes built at run time from a schema's field numbers, for wire formats
whose .proto is a spec rather than a package (Jaeger's and Zipkin's APIs): no generated code,
no protoc step. The classes live in a private descriptor pool, so another package defining the
same names in the default pool cannot clash with them."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
# (field name, number, type, label, message or enum type name or "")
Field = tuple[str, int, int, int, str]


def add_fields(message: descriptor_pb2.DescriptorProto, fields: Iterable[Field]) -> None:
    for name, number, kind, label, type_name in fields:
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name


def message_classes(
    file: descriptor_pb2.FileDescriptorProto,
    names: Iterable[str],
    dependencies: Iterable[ModuleType] = (),
) -> dict[str, type[Message]]:
    """The classes of `file`'s messages `names`, with the generated modules it imports (like
    timestamp_pb2) added to the same private pool first."""
    pool = descriptor_pool.DescriptorPool()
    for module in dependencies:
        dependency = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(dependency)
        pool.Add(dependency)
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.{name}"))
        for name in names
    }


def view_class(package: str, messages: dict[str, list[Field]]) -> type[Message]:
    """The first of `messages` (name -> fields, proto3, in a file of their own): a view of a
    larger message, declaring only what is read of it. Type names in fields are
    `.<package>.<name>`."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '_')}.proto", package=package, syntax="proto3"
    )
    for name, fields in messages.items():
        add_fields(file.message_type.add(name=name), fields)
    root = next(iter(messages))
    return message_classes(file, [root])[root]
