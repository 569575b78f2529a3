"""mesh.server.MeshInterceptor on one in-process mTLS server: authorisation by SPIFFE id,
the exception-to-status table, the inherited deadline, and grpc-prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from mesh import inbound
from mesh.authz import AuthzTable
from mesh.config import AuthzRule
from mesh.identity import (
    CertificateAuthority,
    IdentityFiles,
    channel_credentials,
    ensure_certificates,
    server_credentials,
)
from mesh.problems import FieldViolation, InvalidArgument, NotFound
from mesh.server import MeshInterceptor
from mesh.server._interceptor import _caller
from mesh.telemetry import JsonFormatter, ServerMetrics

DOMAIN, NAMESPACE = "shop.local", "default"
HEALTH = "grpc.health.v1.Health"
SECRET = "the-database-password-is-hunter2"
SERVING = health_pb2.HealthCheckResponse.SERVING
SLACK = 0.05  # the wire rounds grpc-timeout up


class ScriptedHealth(health_pb2_grpc.HealthServicer):
    """Check and Watch do what request.service names."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        script = request.service
        if script == "not-found":
            raise NotFound("product", "sku-404")
        if script == "invalid":
            raise InvalidArgument(
                [FieldViolation("service", "too long"), FieldViolation("other", "bad")]
            )
        if script == "crash":
            raise RuntimeError(SECRET)
        if script == "downstream":
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x"
            )
        if script == "downstream-slow":
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="y" * 20_000,
            )
        if script == "deadline":
            self.remaining.append(inbound.remaining())
        if script == "slow":
            await asyncio.sleep(1.0)  # outlives the caller's deadline; the server cancels it
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield health_pb2.HealthCheckResponse(status=SERVING)
        if request.service == "crash":
            raise RuntimeError(SECRET)
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


@dataclass
class Mesh:
    registry: CollectorRegistry
    servicer: ScriptedHealth
    certs: Path
    address: str
    stubs: dict[str, Any] = field(default_factory=dict)  # HealthStub, untyped attributes
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def metric(self, name: str, method: str = "Check", **labels: str) -> float:
        sample = self.registry.get_sample_value(
            name, {"grpc_type": "unary", "grpc_service": HEALTH, "grpc_method": method, **labels}
        )
        return sample or 0.0


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    """One server with the guard wired as the runtime wires it: through a Registrar,
    handlers wrapped as they are added."""
    certs: Path = tmp_path_factory.mktemp("certs")
    ensure_certificates(certs, DOMAIN, NAMESPACE, ["svc", "admin", "stranger"])
    registry = CollectorRegistry()
    authz = AuthzTable([AuthzRule(("admin",), (f"{HEALTH}/*",))], DOMAIN, NAMESPACE)
    guard = MeshInterceptor(authz, ServerMetrics(registry))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = ScriptedHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, guard.registrar(server))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(IdentityFiles(certs, "svc")))
    await server.start()
    world = Mesh(registry, servicer, certs, f"127.0.0.1:{port}")
    try:
        for name in ("admin", "stranger"):
            channel = grpc.aio.secure_channel(
                f"127.0.0.1:{port}", channel_credentials(IdentityFiles(certs, name))
            )
            world.channels[name] = channel
            world.stubs[name] = health_pb2_grpc.HealthStub(channel)
        yield world
    finally:
        for channel in world.channels.values():
            await channel.close()
        await server.stop(None)


async def check(mesh: Mesh, script: str, caller: str = "admin", **kwargs: Any) -> Any:
    request = health_pb2.HealthCheckRequest(service=script)
    return await mesh.stubs[caller].Check(request, timeout=kwargs.pop("timeout", 5.0), **kwargs)


async def failed_check(
    mesh: Mesh, script: str, caller: str = "admin", timeout: float = 5.0
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(mesh, script, caller, timeout=timeout)
    return caught.value


async def test_an_allowed_caller_gets_its_answer(mesh: Mesh) -> None:
    response = await check(mesh, "ok")

    assert response.status == SERVING


async def test_a_caller_outside_the_table_is_denied_by_spiffe_id(mesh: Mesh) -> None:
    error = await failed_check(mesh, "ok", caller="stranger")

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"spiffe://{DOMAIN}/ns/{NAMESPACE}/sa/stranger" in (error.details() or "")


def two_identities_certificate(certs: Path) -> tuple[bytes, bytes]:
    """A certificate from the mesh CA with two spiffe:// URIs: admin's and stranger's."""
    ca = CertificateAuthority.load(certs)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    uris = [
        x509.UniformResourceIdentifier(f"spiffe://{DOMAIN}/ns/{NAMESPACE}/sa/{name}")
        for name in ("admin", "stranger")
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "two")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(uris), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(pem), key_pem


async def test_a_certificate_with_two_spiffe_ids_is_denied(mesh: Mesh) -> None:
    cert, key = two_identities_certificate(mesh.certs)
    credentials = grpc.ssl_channel_credentials(
        (mesh.certs / "ca.crt").read_bytes(), private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", "svc.default.shop.local")]
    async with grpc.aio.secure_channel(mesh.address, credentials, options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="ok"), timeout=5
            )

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("sans", "caller"),
    [
        ((b"spiffe://shop.local/ns/default/sa/admin",), "spiffe://shop.local/ns/default/sa/admin"),
        (
            (b"spiffe://shop.local/ns/default/sa/admin", b"admin.default.shop.local"),
            "spiffe://shop.local/ns/default/sa/admin",
        ),
        ((b"spiffe://a/ns/x/sa/one", b"spiffe://a/ns/x/sa/two"), None),
        ((b"admin.default.shop.local", b"127.0.0.1"), None),
        ((), None),
    ],
    ids=["one", "one-and-dns", "two", "none", "empty"],
)
def test_the_caller_is_the_one_spiffe_uri_of_its_certificate(
    sans: tuple[bytes, ...], caller: str | None
) -> None:
    assert _caller(sans) == caller


async def test_a_denied_call_never_reaches_the_handler(mesh: Mesh) -> None:
    seen = len(mesh.servicer.remaining)

    error = await failed_check(mesh, "deadline", caller="stranger")

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(mesh.servicer.remaining) == seen


async def test_not_found_becomes_its_code_with_resource_info(mesh: Mesh) -> None:
    error = await failed_check(mesh, "not-found")

    assert error.code() is grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    assert (info.resource_type, info.resource_name) == ("product", "sku-404")


async def test_invalid_argument_becomes_its_code_with_bad_request(mesh: Mesh) -> None:
    error = await failed_check(mesh, "invalid")

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["service", "other"]


async def test_an_unhandled_exception_becomes_internal_without_its_text(mesh: Mesh) -> None:
    error = await failed_check(mesh, "crash")

    assert error.code() is grpc.StatusCode.INTERNAL
    assert SECRET not in (error.details() or "")
    assert SECRET not in str(error.trailing_metadata())
    assert rpc_status.from_call(error) is None


async def test_an_internal_error_names_the_trace_its_log_line_carries(mesh: Mesh) -> None:
    """Untraced calls too: a reported error leads to the server's log line."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    capture = Capture()
    capture.setFormatter(JsonFormatter())
    logger = logging.getLogger("mesh.server")
    logger.addHandler(capture)
    try:
        error = await failed_check(mesh, "crash")
    finally:
        logger.removeHandler(capture)

    [line] = [json.loads(line) for line in lines if "unhandled error" in line]
    assert error.details() == f"internal error (trace {line['trace_id']})"


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ("downstream", grpc.StatusCode.UNAVAILABLE),
        ("downstream-slow", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
async def test_a_downstream_failure_keeps_its_code_and_says_a_dependency_failed(
    mesh: Mesh, script: str, code: grpc.StatusCode
) -> None:
    error = await failed_check(mesh, script)

    assert error.code() is code
    info = error_info(error)
    assert (info.domain, info.reason) == ("shopmesh", "DEPENDENCY_FAILED")
    assert info.metadata["code"] == code.name
    assert len(error.details() or "") < 512  # the dependency's own text, bounded


def raw_check(mesh: Mesh, caller: str = "admin", method: str = "Check") -> Any:
    """Health/`method` taking the request as bytes, as a hostile peer sends it."""
    channel = mesh.channels[caller]
    if method == "Watch":
        return channel.unary_stream(f"/{HEALTH}/Watch")
    return channel.unary_unary(f"/{HEALTH}/Check")


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff", b"\x0a\x02\xff\xfe"],  # not protobuf; a string that is not UTF-8
    ids=["garbage", "bad-utf8"],
)
async def test_undecodable_requests_are_invalid_argument_and_counted(
    mesh: Mesh, raw: bytes
) -> None:
    invalid = mesh.metric("grpc_server_handled_total", grpc_code="InvalidArgument")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_check(mesh)(raw, timeout=5.0)

    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in (error.details() or "")
    assert "Error" not in (error.details() or "")  # no Python exception's text
    assert error_info(error).reason == "MALFORMED_REQUEST"
    assert mesh.metric("grpc_server_handled_total", grpc_code="InvalidArgument") == invalid + 1


async def test_an_undecodable_stream_request_is_invalid_argument(mesh: Mesh) -> None:
    call = raw_check(mesh, method="Watch")(b"\xff\xff", timeout=5.0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [item async for item in call]

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_denied_caller_is_refused_before_its_bytes_are_read(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_check(mesh, caller="stranger")(b"\xff\xff\xff", timeout=5.0)

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_the_handler_sees_the_callers_deadline(mesh: Mesh) -> None:
    await check(mesh, "deadline", timeout=3.0)

    left = mesh.servicer.remaining[-1]
    assert left is not None
    # NOTE: grpc-timeout is encoded rounded up, so the server may see a little more.
    assert 2.0 < left <= 3.0 + SLACK


async def test_the_deadline_of_one_call_does_not_leak_into_the_next(mesh: Mesh) -> None:
    await check(mesh, "deadline", timeout=1.0)
    await check(mesh, "deadline", timeout=30.0)

    short, long = mesh.servicer.remaining[-2:]
    assert short is not None
    assert long is not None
    assert short <= 1.0 + SLACK < 25.0 < long


async def test_without_a_client_deadline_the_handler_sees_none(mesh: Mesh) -> None:
    await mesh.stubs["admin"].Check(health_pb2.HealthCheckRequest(service="deadline"))

    assert mesh.servicer.remaining[-1] is None


async def test_a_call_that_outlives_its_deadline_is_not_counted_as_ok(mesh: Mesh) -> None:
    ok = mesh.metric("grpc_server_handled_total", grpc_code="OK")
    finished = mesh.metric("grpc_server_handling_seconds_count")

    error = await failed_check(mesh, "slow", timeout=0.1)
    for _ in range(200):  # the server notices the deadline on its own, soon after
        if mesh.metric("grpc_server_handling_seconds_count") > finished:
            break
        await asyncio.sleep(0.01)

    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert mesh.metric("grpc_server_handling_seconds_count") == finished + 1
    assert mesh.metric("grpc_server_handled_total", grpc_code="OK") == ok


async def test_an_unknown_method_is_unimplemented(mesh: Mesh) -> None:
    missing = mesh.channels["admin"].unary_unary(
        f"/{HEALTH}/NoSuchMethod",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await missing(health_pb2.HealthCheckRequest(), timeout=5.0)

    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_server_streams_pass_through_the_guard(mesh: Mesh) -> None:
    call = mesh.stubs["admin"].Watch(health_pb2.HealthCheckRequest(service="ok"), timeout=5.0)

    statuses = [response.status async for response in call]

    assert statuses == [SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


async def test_a_crashing_stream_ends_internal_after_what_it_sent(mesh: Mesh) -> None:
    call = mesh.stubs["admin"].Watch(health_pb2.HealthCheckRequest(service="crash"), timeout=5.0)
    received: list[int] = []

    async def drain() -> None:
        async for response in call:
            received.append(response.status)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()

    assert received == [SERVING]
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert SECRET not in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("script", "caller", "go_code"),
    [
        ("ok", "admin", "OK"),
        ("not-found", "admin", "NotFound"),
        ("invalid", "admin", "InvalidArgument"),
        ("crash", "admin", "Internal"),
        ("downstream", "admin", "Unavailable"),
        ("downstream-slow", "admin", "DeadlineExceeded"),
        ("ok", "stranger", "PermissionDenied"),
    ],
)
async def test_every_call_is_counted_with_its_code(
    mesh: Mesh, script: str, caller: str, go_code: str
) -> None:
    started = mesh.metric("grpc_server_started_total")
    handled = mesh.metric("grpc_server_handled_total", grpc_code=go_code)
    observed = mesh.metric("grpc_server_handling_seconds_count")

    with contextlib.suppress(grpc.aio.AioRpcError):
        await check(mesh, script, caller)

    assert mesh.metric("grpc_server_started_total") == started + 1
    assert mesh.metric("grpc_server_handled_total", grpc_code=go_code) == handled + 1
    assert mesh.metric("grpc_server_handling_seconds_count") == observed + 1


async def test_streams_are_counted_as_server_streams(mesh: Mesh) -> None:
    def watched() -> float:
        sample = mesh.registry.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "server_stream",
                "grpc_service": HEALTH,
                "grpc_method": "Watch",
                "grpc_code": "OK",
            },
        )
        return sample or 0.0

    before = watched()

    _ = [r async for r in mesh.stubs["admin"].Watch(health_pb2.HealthCheckRequest(), timeout=5.0)]

    assert watched() == before + 1


class RecordingServer:
    """What a Registrar asks of its server, recorded."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = dict(handlers)


def test_methods_are_registered_guarded_and_their_generic_twin_is_dropped() -> None:
    server = RecordingServer()
    guard = MeshInterceptor(AuthzTable([], DOMAIN, NAMESPACE), ServerMetrics(CollectorRegistry()))
    health_pb2_grpc.add_HealthServicer_to_server(ScriptedHealth(), guard.registrar(server))  # type: ignore[arg-type]

    assert server.generic == []  # the adder's generic handler would never serve
    handlers = server.registered[HEALTH]
    assert set(handlers) == {"Check", "List", "Watch"}
    assert handlers["Check"].unary_unary.__qualname__.startswith("_Guard.")  # guarded
    assert handlers["Check"].request_deserializer is None  # the guard decodes


def test_a_service_added_only_as_a_generic_handler_is_named_unserved() -> None:
    registrar = MeshInterceptor(
        AuthzTable([], DOMAIN, NAMESPACE), ServerMetrics(CollectorRegistry())
    ).registrar(RecordingServer())  # type: ignore[arg-type]
    health_pb2_grpc.add_HealthServicer_to_server(ScriptedHealth(), registrar)  # type: ignore[arg-type]
    registrar.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("pkg.Lost", {})])

    assert registrar.unserved() == ["pkg.Lost"]
    with pytest.raises(TypeError):
        registrar.add_generic_rpc_handlers([grpc.GenericRpcHandler()])


async def test_an_undecodable_message_in_a_request_stream_is_invalid_argument(
    tmp_path: Path,
) -> None:
    """Messages of a request stream are decoded as the servicer reads them."""
    ensure_certificates(tmp_path, DOMAIN, NAMESPACE, ["svc", "admin"])
    registry = CollectorRegistry()
    authz = AuthzTable([AuthzRule(("admin",), ("*",))], DOMAIN, NAMESPACE)
    guard = MeshInterceptor(authz, ServerMetrics(registry))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    received: list[str] = []

    async def collect(requests: AsyncIterator[Any], context: Any) -> bytes:
        async for request in requests:
            received.append(request.service)
        return b""

    handler = grpc.stream_unary_rpc_method_handler(
        collect, request_deserializer=health_pb2.HealthCheckRequest.FromString
    )
    guard.registrar(server).add_registered_method_handlers("test.Collector", {"Collect": handler})
    port = server.add_secure_port("127.0.0.1:0", server_credentials(IdentityFiles(tmp_path, "svc")))
    await server.start()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}", channel_credentials(IdentityFiles(tmp_path, "admin"))
    )
    try:

        async def requests() -> AsyncIterator[bytes]:
            yield health_pb2.HealthCheckRequest(service="first").SerializeToString()
            yield b"\xff\xff\xff"

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stream_unary("/test.Collector/Collect")(requests(), timeout=5.0)
    finally:
        await channel.close()
        await server.stop(None)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert received == ["first"]
    handled = registry.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_type": "client_stream",
            "grpc_service": "test.Collector",
            "grpc_method": "Collect",
            "grpc_code": "InvalidArgument",
        },
    )
    assert handled == 1
