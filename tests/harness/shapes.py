"""A test-only service with a method of each call shape, declared in the default
descriptor pool (where the mesh client reads each method's idempotency level):

    service Shapes {
      rpc Get(Empty) returns (Empty)                    NO_SIDE_EFFECTS
      rpc Watch(Empty) returns (stream Empty)           NO_SIDE_EFFECTS
      rpc Upload(stream Empty) returns (Empty)
      rpc Chat(stream Empty) returns (stream Empty)
    }

Calls carry raw bytes (no serializers), so fakes and servers can script them freely.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2

SERVICE = "test.shapes.v1.Shapes"
GET, WATCH, UPLOAD, CHAT = (f"/{SERVICE}/{name}" for name in ("Get", "Watch", "Upload", "Chat"))

_SAFE = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def _declare() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE)
        return
    except KeyError:
        pass
    empty = f".{empty_pb2.DESCRIPTOR.message_types_by_name['Empty'].full_name}"
    methods = []
    for name, client_streams, server_streams, safe in (
        ("Get", False, False, True),
        ("Watch", False, True, True),
        ("Upload", True, False, False),
        ("Chat", True, True, False),
    ):
        method = descriptor_pb2.MethodDescriptorProto(
            name=name,
            input_type=empty,
            output_type=empty,
            client_streaming=client_streams,
            server_streaming=server_streams,
        )
        if safe:
            method.options.idempotency_level = _SAFE
        methods.append(method)
    pool.Add(
        descriptor_pb2.FileDescriptorProto(
            name="test/shapes/v1/shapes.proto",
            package="test.shapes.v1",
            dependency=[empty_pb2.DESCRIPTOR.name],
            service=[descriptor_pb2.ServiceDescriptorProto(name="Shapes", method=methods)],
            syntax="proto3",
        )
    )


_declare()
