"""Loki's `logproto.PushRequest` (pkg/push/push.proto) as Google protobuf classes, built from a descriptor.

The fake Loki decodes pushes with these, independently of the shipper's hand-written encoder, so a test of
the two together checks the encoder against protobuf's own wire format rather than against itself.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_LABEL = descriptor_pb2.FieldDescriptorProto


def _field(
    message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int, *, repeated: bool = False
) -> descriptor_pb2.FieldDescriptorProto:
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _LABEL.LABEL_REPEATED if repeated else _LABEL.LABEL_OPTIONAL
    return field


def _build() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="pkg/push/push.proto", package="logproto", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/timestamp.proto")
    push = proto.message_type.add(name="PushRequest")
    _field(push, "streams", 1, _LABEL.TYPE_MESSAGE, repeated=True).type_name = ".logproto.StreamAdapter"
    _field(push, "format", 2, _LABEL.TYPE_STRING)
    stream = proto.message_type.add(name="StreamAdapter")
    _field(stream, "labels", 1, _LABEL.TYPE_STRING)
    _field(stream, "entries", 2, _LABEL.TYPE_MESSAGE, repeated=True).type_name = ".logproto.EntryAdapter"
    _field(stream, "hash", 3, _LABEL.TYPE_UINT64)
    pair = proto.message_type.add(name="LabelPairAdapter")
    _field(pair, "name", 1, _LABEL.TYPE_STRING)
    _field(pair, "value", 2, _LABEL.TYPE_STRING)
    entry = proto.message_type.add(name="EntryAdapter")
    _field(entry, "timestamp", 1, _LABEL.TYPE_MESSAGE).type_name = ".google.protobuf.Timestamp"
    _field(entry, "line", 2, _LABEL.TYPE_STRING)
    for name, number in (("structuredMetadata", 3), ("parsed", 4)):
        _field(
            entry, name, number, _LABEL.TYPE_MESSAGE, repeated=True
        ).type_name = ".logproto.LabelPairAdapter"
    pool.Add(proto)
    return pool


_POOL = _build()
PushRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("logproto.PushRequest"))
"""`logproto.PushRequest`: `streams[].labels`, `streams[].entries[].{timestamp, line, structuredMetadata}`."""
