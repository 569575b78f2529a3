"""The gateway tests' upstream: tests/protos/gwtest/v1/library.proto compiled into a
descriptor set, and an in-process gRPC server that answers every method with what it
got (the request, the call's metadata), so a test sees exactly what the edge sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
from google.api import annotations_pb2
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_tools import protoc

from gateway._descriptors import ApiSurface, RpcMethod, load_descriptor_set

PROTOS = Path(__file__).parent.parent / "protos"
LIBRARY = "gwtest.v1.Library"


def compile_protos(out: Path, root: Path = PROTOS) -> Path:
    """protoc every .proto under `root` into one descriptor set (imports included)."""
    googleapis = Path(annotations_pb2.__file__).parent.parent.parent
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(root)) for p in sorted(root.rglob("*.proto"))]
    target = out / "gwtest.binpb"
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{googleapis}",
        f"-I{wkt}",
        f"--descriptor_set_out={target}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on the test protos")
    return target


def _metadata_map(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    found = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            found[key] = f"{found[key]},{value}" if key in found else value
    remaining = context.time_remaining()
    if remaining is not None:
        found["x-echo-deadline"] = f"{remaining:.3f}"
    return found


def _echo(method: RpcMethod, surface: ApiSurface, request: message.Message, context: Any) -> Any:
    answer = surface.message_class(method.output)()
    answer.request.CopyFrom(request)
    answer.metadata.update(_metadata_map(context))
    return answer


async def _fail(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if request.header:
        await context.send_initial_metadata([("x-fail-header", request.header)])
    status = status_pb2.Status(code=request.code, message=request.message)
    if request.field:
        detail = any_pb2.Any()
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=request.field, description="echo says no"
        )
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    trailers: list[tuple[str, str | bytes]] = [
        ("grpc-status-details-bin", status.SerializeToString())
    ]
    if request.trailer:
        trailers.append(("x-fail-trailer", request.trailer))
    context.set_trailing_metadata(trailers)
    await context.abort(grpc.StatusCode(_code(request.code)), request.message)


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


@dataclass
class EchoUpstream:
    address: str
    """host:port, plaintext."""
    calls: list[str] = field(default_factory=list)
    """Names of the methods called, in order: what reached the service."""


def _handlers(surface: ApiSurface, upstream: EchoUpstream) -> grpc.GenericRpcHandler:
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in surface.methods:
        if method.service != LIBRARY:
            continue
        decode = surface.message_class(method.input).FromString
        methods[method.name] = _handler(surface, method, decode, upstream.calls)
    return grpc.method_handlers_generic_handler(LIBRARY, methods)


async def _delay(context: Any) -> None:
    """The `x-echo-delay` metadata's seconds, slept before answering."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-echo-delay":
            await asyncio.sleep(float(value))


def _handler(
    surface: ApiSurface,
    method: RpcMethod,
    decode: Callable[[bytes], message.Message],
    calls: list[str],
) -> grpc.RpcMethodHandler:
    encode = _serialize
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            calls.append(method.name)
            for index in range(request.count):
                answer = _echo(method, surface, request, context)
                answer.index = index
                yield answer
            if request.fail_code:
                await context.abort(grpc.StatusCode(_code(request.fail_code)), "watch failed")

        return grpc.unary_stream_rpc_method_handler(stream, decode, encode)

    async def unary(request: Any, context: Any) -> Any:
        calls.append(method.name)
        await _delay(context)
        if method.name == "Fail":
            await _fail(request, context)
        await context.send_initial_metadata([("x-echo-header", "sent")])
        context.set_trailing_metadata([("x-echo-trailer", "sent")])
        return _echo(method, surface, request, context)

    return grpc.unary_unary_rpc_method_handler(unary, decode, encode)


def _serialize(answer: message.Message) -> bytes:
    return answer.SerializeToString()


@contextlib.asynccontextmanager
async def echo_server(descriptor_set: Path) -> AsyncIterator[EchoUpstream]:
    """An echo server of the Library service on 127.0.0.1 (plaintext)."""
    surface = load_descriptor_set(descriptor_set)
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    upstream = EchoUpstream(f"127.0.0.1:{port}")
    server.add_generic_rpc_handlers([_handlers(surface, upstream)])
    await server.start()
    try:
        yield upstream
    finally:
        await server.stop(0)
