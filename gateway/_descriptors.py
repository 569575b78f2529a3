"""What the edge serves, read from a descriptor set: every method of every service
with its google.api.http bindings, and the message classes to transcode with.

The set is read as FileDescriptorProtos (so each method's HttpRule option parses with
the google.api extension registered in the default pool) and loaded into a pool of
its own, so it can hold any contract, the shop's or a stranger's, beside the
process's own generated modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from google.protobuf.descriptor import Descriptor

__all__ = ["ApiSurface", "DescriptorSetError", "HttpBinding", "RpcMethod", "load_descriptor_set"]

_VERBS = ("get", "put", "post", "delete", "patch")
_IDEMPOTENT = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


class DescriptorSetError(Exception):
    """The descriptor set cannot be read or holds an unusable binding."""


@dataclass(frozen=True)
class HttpBinding:
    """One HttpRule (or one of its additional_bindings) of a method."""

    verb: str
    """HTTP method, upper case: GET, PUT, POST, DELETE, PATCH, or a custom kind."""
    template: str
    """The path template as written, e.g. "/v1/{name=shelves/*/books/*}:cancel"."""
    body: str = ""
    """"" (no body), "*" (the whole request) or the request field the body fills."""
    response_body: str = ""
    """"" (the whole response) or the response field that is the HTTP body."""


@dataclass(frozen=True)
class RpcMethod:
    """One gRPC method, with what the edge needs to call it and to document it."""

    service: str
    """Full name of its service, e.g. "shop.order.v1.OrderService"."""
    name: str
    input: Descriptor
    output: Descriptor
    client_streaming: bool
    server_streaming: bool
    idempotent: bool
    """Declared NO_SIDE_EFFECTS or IDEMPOTENT: safe to retry."""
    bindings: tuple[HttpBinding, ...]
    comment: str = ""
    """The method's leading comment in its .proto, if the set kept source info."""

    @property
    def path(self) -> str:
        """The gRPC method path, e.g. "/shop.order.v1.OrderService/PlaceOrder"."""
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        """ "pkg.Service/Method", as mesh.yaml's authz rules name it."""
        return f"{self.service}/{self.name}"


@dataclass(frozen=True)
class ApiSurface:
    """Every method of a descriptor set, bound to HTTP or not, in the set's order."""

    methods: tuple[RpcMethod, ...]
    pool: descriptor_pool.DescriptorPool = field(repr=False)
    comments: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Leading comments by full name of message, field ("pkg.Msg.field"), enum and
    enum value, where the set kept source info."""

    @property
    def bound(self) -> Iterator[tuple[RpcMethod, HttpBinding]]:
        """Each HTTP binding with its method."""
        for method in self.methods:
            for binding in method.bindings:
                yield method, binding

    def message_class(self, descriptor: Descriptor) -> type[message.Message]:
        """The (dynamic) message class of a message type of this surface."""
        return message_factory.GetMessageClass(descriptor)


def load_descriptor_set(path: Path) -> ApiSurface:
    """Read a FileDescriptorSet (protoc's --descriptor_set_out, with --include_imports).

    Raises:
        DescriptorSetError: the file is missing or not a complete descriptor set.
    """
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except OSError as error:
        raise DescriptorSetError(f"cannot read {path}: {error.strerror}") from error
    except message.DecodeError as error:
        raise DescriptorSetError(f"{path} is not a FileDescriptorSet") from error
    return surface_of(files)


def surface_of(files: descriptor_pb2.FileDescriptorSet) -> ApiSurface:
    """The surface of an in-memory descriptor set (see `load_descriptor_set`)."""
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        try:
            pool.Add(file)
        except TypeError as error:  # a conflicting or malformed file
            raise DescriptorSetError(f"{file.name}: {error}") from error
    methods: list[RpcMethod] = []
    comments: dict[str, str] = {}
    for file in files.file:
        comments.update(_comments(file))
        for service in file.service:
            service_name = f"{file.package}.{service.name}" if file.package else service.name
            for rpc in service.method:
                methods.append(_method(pool, service_name, rpc, comments))
    return ApiSurface(methods=tuple(methods), pool=pool, comments=comments)


def _method(
    pool: descriptor_pool.DescriptorPool,
    service: str,
    rpc: descriptor_pb2.MethodDescriptorProto,
    comments: Mapping[str, str],
) -> RpcMethod:
    try:
        request = pool.FindMessageTypeByName(rpc.input_type.lstrip("."))
        response = pool.FindMessageTypeByName(rpc.output_type.lstrip("."))
    except KeyError as error:
        raise DescriptorSetError(
            f"{service}/{rpc.name}: {error}: build the set with --include_imports"
        ) from error
    bindings: tuple[HttpBinding, ...] = ()
    if rpc.options.HasExtension(annotations_pb2.http):
        rule = rpc.options.Extensions[annotations_pb2.http]
        bindings = tuple(_bindings(rule, f"{service}/{rpc.name}"))
    return RpcMethod(
        service=service,
        name=rpc.name,
        input=request,
        output=response,
        client_streaming=rpc.client_streaming,
        server_streaming=rpc.server_streaming,
        idempotent=rpc.options.idempotency_level in _IDEMPOTENT,
        bindings=bindings,
        comment=comments.get(f"{service}/{rpc.name}", ""),
    )


def _bindings(rule: http_pb2.HttpRule, where: str) -> Iterator[HttpBinding]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise DescriptorSetError(f"{where}: an HttpRule without a pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, template = kind.upper(), getattr(rule, kind)
    yield HttpBinding(
        verb=verb, template=template, body=rule.body, response_body=rule.response_body
    )
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise DescriptorSetError(f"{where}: additional_bindings may not nest")
        yield from _bindings(extra, where)


# Paths into FileDescriptorProto (descriptor.proto's field numbers) for source info.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _METHOD, _ENUM_VALUE = 2, 3, 4, 2, 2


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Leading comments by the full name of what they describe."""
    names = _names_by_path(file)
    found = {}
    for location in file.source_code_info.location:
        name = names.get(tuple(location.path))
        text = location.leading_comments.strip()
        if name and text:
            found[name] = "\n".join(line.strip() for line in text.splitlines())
    return found


def _names_by_path(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    prefix = f"{file.package}." if file.package else ""
    names: dict[tuple[int, ...], str] = {}

    def enum(path: tuple[int, ...], scope: str, proto: descriptor_pb2.EnumDescriptorProto) -> None:
        names[path] = f"{scope}{proto.name}"
        for v, value in enumerate(proto.value):
            names[(*path, _ENUM_VALUE, v)] = f"{scope}{proto.name}.{value.name}"

    def msg(path: tuple[int, ...], scope: str, proto: descriptor_pb2.DescriptorProto) -> None:
        full = f"{scope}{proto.name}"
        names[path] = full
        for f, fld in enumerate(proto.field):
            names[(*path, _FIELD, f)] = f"{full}.{fld.name}"
        for n, nested in enumerate(proto.nested_type):
            msg((*path, _NESTED, n), f"{full}.", nested)
        for e, nested_enum in enumerate(proto.enum_type):
            enum((*path, _NESTED_ENUM, e), f"{full}.", nested_enum)

    for m, proto in enumerate(file.message_type):
        msg((_MESSAGE, m), prefix, proto)
    for e, proto_enum in enumerate(file.enum_type):
        enum((_ENUM, e), prefix, proto_enum)
    for s, service in enumerate(file.service):
        names[(_SERVICE, s)] = f"{prefix}{service.name}"
        for r, rpc in enumerate(service.method):
            names[(_SERVICE, s, _METHOD, r)] = f"{prefix}{service.name}/{rpc.name}"
    return names
