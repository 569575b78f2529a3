"""What every call needs, around each handler: authorisation by SPIFFE id, decoding the
request (bytes that are not the message get INVALID_ARGUMENT, counted like any call),
RED metrics, the deadline handed on to downstream calls, the one table that turns
exceptions into gRPC statuses (a downstream failure the mesh client could not retry
away becomes DependencyFailed, so callers do not retry it again), the faults injected
on purpose (mesh.server._faults: one dict lookup per call, and only when some method
has one), and the choice of which calls OpenTelemetry traces.

Each handler is wrapped once, as servicers register them
(`MeshInterceptor.registrar(server)`), and registered with the server as it is: calls
skip grpc.aio's interceptor pipeline, which costs a measurable share of a Python
server's throughput even for a no-op interceptor.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import descriptor_pool
from opentelemetry.trace import format_trace_id

from mesh import inbound
from mesh.authz import AuthzTable, Decision
from mesh.identity import forwarded_uris
from mesh.problems import (
    STATUS_DETAILS_KEY,
    DependencyFailed,
    MalformedRequest,
    Problem,
    bounded,
)
from mesh.server._faults import ArmedFault, FaultInjector
from mesh.telemetry import (
    HeadSampler,
    MethodMetrics,
    ServerMetrics,
    current_trace_ids,
    grpc_type,
)

__all__ = ["CallerSans", "MeshInterceptor", "Registrar", "forwarded_sans", "peer_sans"]

log = logging.getLogger("mesh.server")

# Generic only in the type stubs, so named as strings.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

# Downstream failures that are no bug here: answered as DependencyFailed, with their code.
_DEPENDENCY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
Decoder: TypeAlias = Callable[[bytes], Any]


def _caller(sans: tuple[bytes, ...]) -> str | None:
    """The caller's SPIFFE id: its certificate's one spiffe:// URI SAN, else None.

    NOTE: the SANs come from context.peer_identities(), as the TLS handshake set them,
    which costs a tenth of auth_context() (that copies the whole certificate on every
    call). Exactly one spiffe:// SAN is required, as for grpc's own peer_spiffe_id.
    """
    uris = [san for san in sans if san.startswith(b"spiffe://")]
    return uris[0].decode() if len(uris) == 1 else None


CallerSans = Callable[[Context], tuple[bytes, ...]]
"""Where a call's caller identity comes from: its URI SANs, as grpc hands them over."""


def peer_sans(context: Context) -> tuple[bytes, ...]:
    """The SANs of the TLS peer's certificate: the caller, when it dialled us itself."""
    return tuple(context.peer_identities() or ())


_XFCC = "x-forwarded-client-cert"


def forwarded_sans(context: Context) -> tuple[bytes, ...]:
    """The caller's URI SANs as this instance's own sidecar forwards them (Envoy's
    x-forwarded-client-cert, which it sets itself and never passes on from a caller).
    Trusted only because nothing but the sidecar can reach the app's socket."""
    for key, value in context.invocation_metadata() or ():
        if key == _XFCC:
            text = value.decode() if isinstance(value, bytes) else value
            return tuple(uri.encode() for uri in forwarded_uris(text))
    return ()


def _request_type(method: str) -> str:
    """The full name of `method`'s request message, for errors ("/pkg.Svc/M")."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
    except KeyError:
        return "request message"
    return str(found.input_type.full_name)


def _strict(decode: Decoder | None, request_type: str) -> Decoder | None:
    """`decode`, failing with MalformedRequest: for request streams, where grpc calls
    the deserializer as the servicer reads, and its error reaches the servicer."""
    if decode is None:
        return None

    def strict(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception:
            raise MalformedRequest(request_type) from None

    return strict


def _cancel_code(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _CallDetails(grpc.HandlerCallDetails):
    """What OpenTelemetry's interceptor reads of a call: its method and metadata."""

    def __init__(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class _Guard:
    """The per-method half: metrics, the method name, and the tracing hand-off.

    Every call is counted exactly once, on the branch where it ends.
    NOTE: grpc.aio's context.abort() sends the status before it raises, so a call is
    counted before we abort it; otherwise a caller could see its error before /metrics
    does. (A servicer that calls context.abort() itself is counted just after.)

    No span starts before a call is admitted (authorised, counted), so a denied caller
    never gets one, even if its call was picked for tracing. A traced call re-enters
    the guard's own wrapper inside OpenTelemetry's span, with `admitted_at` set, which
    skips admission; the servicer runs once.
    """

    def __init__(
        self,
        method: str,
        stats: MethodMetrics,
        authz: AuthzTable,
        tracing: grpc.aio.ServerInterceptor | None,
        sampler: HeadSampler | None,
        caller_sans: CallerSans,
        faults: FaultInjector | None = None,
    ) -> None:
        self.method = method
        self.stats = stats
        self.authz = authz
        self.tracing = tracing
        self.sampler = (
            sampler
            if tracing is not None and sampler is not None and sampler.covers(method)
            else None
        )
        self.decide = self.sampler.decide if self.sampler else None
        """Whether a call is traced, from its metadata (None: never; see HeadSampler)."""
        self.request_type = _request_type(method)
        self.caller_sans = caller_sans
        self.faults = faults
        # The injector's armed faults (one dict, changed in place), or one that stays empty.
        self.armed: dict[str, ArmedFault] = faults.armed if faults is not None else {}
        # The caller's SANs, as grpc hands them over, -> the decision for this method,
        # while the table is at generation `_generation`.
        self._decisions: dict[tuple[bytes, ...], Decision] = {}
        self._generation = authz.generation

    def record(self, code: grpc.StatusCode, started: float) -> None:
        self.stats.finish(code, time.perf_counter() - started)

    def authorise(self, sans: tuple[bytes, ...]) -> Decision:
        """The decision for a caller not yet cached."""
        decision = self.authz.check(_caller(sans), self.method)
        if len(self._decisions) < 1024:
            self._decisions[sans] = decision
        return decision

    def refusal(self, context: Context) -> Decision | None:
        """The decision on the call's caller if it is denied, else None."""
        if self._generation != self.authz.generation:
            self._decisions = {}  # the live table changed: every open connection too
            self._generation = self.authz.generation
        sans = self.caller_sans(context)
        decision = self._decisions.get(sans) or self.authorise(sans)
        return None if decision.allowed else decision

    async def admit(self, context: Context) -> float:
        """Count the call's start and check its caller: a denied call is counted and
        aborted here. Returns when the call started. (The unary wrapper does the same
        without a coroutine of its own.)"""
        started = time.perf_counter()
        self.stats.start()
        refusal = self.refusal(context)
        if refusal is not None:
            await self.deny(refusal, context, started)
        return started

    def sample(self, context: Context) -> bool:
        """Whether the admitted call is traced, as the sampler decides from its metadata;
        records the call, with the trace it belongs to, for the calls it makes
        downstream."""
        decide = self.decide
        found = decide(context.invocation_metadata()) if decide else None
        if found is True:
            inbound.enter(context)  # OpenTelemetry's span will carry the trace
            return True
        inbound.enter(context, found)
        return False

    async def deny(self, decision: Decision, context: Context, started: float) -> None:
        self.record(grpc.StatusCode.PERMISSION_DENIED, started)
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{bounded(str(decision.caller))} may not call {self.method} ({decision.reason})",
        )

    async def fail(self, error: BaseException, context: Context, started: float) -> NoReturn:
        """Count the failed call and, unless grpc has already ended it, abort it with
        the status `error` stands for."""
        if isinstance(error, grpc.aio.AbortError | asyncio.CancelledError | GeneratorExit):
            # The servicer aborted (status already sent), or grpc ended the handler.
            code = context.code()
            if not isinstance(code, grpc.StatusCode):
                code = _cancel_code(context)
            self.record(code, started)
            raise error
        if isinstance(error, grpc.aio.AioRpcError) and error.code() in _DEPENDENCY_CODES:
            # The mesh client has retried already: our callers must not retry again, nor
            # count against this instance a failure that is another's.
            error = DependencyFailed(error.code(), error.details() or "")
        trailing: tuple[tuple[str, str | bytes], ...] = ()
        if isinstance(error, Problem):
            code, message = error.code, error.message
            trailing = ((STATUS_DETAILS_KEY, error.to_status().SerializeToString()),)
        else:
            log.exception("unhandled error in %s", self.method)
            ids = current_trace_ids()  # the trace its log line carries
            ref = f" (trace {format_trace_id(ids[0])})" if ids else ""
            code, message = grpc.StatusCode.INTERNAL, f"internal error{ref}"
        self.record(code, started)
        if isinstance(error, DependencyFailed):
            # Headers first, so the status comes in trailers: Envoy retries a gRPC status
            # only from a trailers-only answer, and a caller's sidecar must not retry
            # what our own retries (or our sidecar's) could not mend.
            await context.send_initial_metadata(())
        await context.abort(code, message, trailing_metadata=trailing)

    async def inject(self, fault: ArmedFault, context: Context) -> None:
        """The armed `fault`, on this call (raises InjectedFault if it fails)."""
        assert self.faults is not None  # only its own dict arms anything
        await self.faults.inject(fault, context)

    def finished(self, context: Context, started: float) -> None:
        """Count a call whose handler returned: OK, unless it set another code."""
        code = context.code()
        self.record(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK, started)

    async def traced(
        self, handler: Handler, behavior: Callable[..., Any], context: Context
    ) -> Callable[..., Any]:
        """`behavior` (of `handler`'s kind) inside OpenTelemetry's span."""
        assert self.tracing is not None

        async def inner(_: grpc.HandlerCallDetails) -> Handler:
            return _like(handler, behavior, handler.request_deserializer)

        details = _CallDetails(self.method, context.invocation_metadata() or ())
        wrapped = await self.tracing.intercept_service(inner, details)
        assert wrapped is not None
        return _behavior(wrapped)

    def unary(self, handler: Handler, behavior: Callable[..., Awaitable[Any]]) -> Handler:
        """The wrapper of a unary-response method: the hot path of every service.

        Admission does what admit() does without a coroutine of its own, which per call
        costs several microseconds of a Python server's event loop.
        """
        stats, clock, refuse = self.stats, time.perf_counter, self.refusal
        decode = None if handler.request_streaming else handler.request_deserializer
        armed, method = self.armed, self.method

        async def handle(request: Any, context: Context, admitted_at: float | None = None) -> Any:
            if admitted_at is None:
                started = clock()
                stats.started += 1
                refusal = refuse(context)
                if refusal is not None:
                    await self.deny(refusal, context, started)
                if self.sample(context):
                    inner = functools.partial(handle, admitted_at=started)
                    return await (await self.traced(handler, inner, context))(request, context)
            else:
                started = admitted_at
            if decode is not None:
                try:
                    request = decode(request)
                except Exception:
                    await self.fail(MalformedRequest(self.request_type), context, started)
            try:
                if armed and (fault := armed.get(method)) is not None:
                    await self.inject(fault, context)
                response = await behavior(request, context)
            except (Exception, asyncio.CancelledError) as error:
                await self.fail(error, context, started)
            if context.code() is None:
                stats.succeeded(clock() - started)
            else:
                self.finished(context, started)
            return response

        return self._guarded(handler, handle)

    def guarded(self, handler: Handler) -> Handler:
        """`handler`, guarded."""
        behavior = _behavior(handler)
        if handler.response_streaming:
            return self.streaming(handler, behavior)
        return self.unary(handler, behavior)

    def streaming(self, handler: Handler, behavior: Callable[..., Any]) -> Handler:
        if not inspect.isasyncgenfunction(behavior):
            # a coroutine that writes with context.write()
            return self.unary(handler, behavior)

        decode = None if handler.request_streaming else handler.request_deserializer

        async def stream(
            request: Any, context: Context, admitted_at: float | None = None
        ) -> AsyncIterator[Any]:
            if admitted_at is None:
                started = await self.admit(context)
                if self.sample(context):
                    inner = functools.partial(stream, admitted_at=started)
                    async for item in (await self.traced(handler, inner, context))(
                        request, context
                    ):
                        yield item
                    return
            else:
                started = admitted_at
            if decode is not None:
                try:
                    request = decode(request)
                except Exception:
                    await self.fail(MalformedRequest(self.request_type), context, started)
            try:
                if self.armed and (fault := self.armed.get(self.method)) is not None:
                    await self.inject(fault, context)
                async for item in behavior(request, context):
                    yield item
            except (Exception, asyncio.CancelledError, GeneratorExit) as error:
                await self.fail(error, context, started)
            self.finished(context, started)

        return self._guarded(handler, stream)

    def _guarded(self, handler: Handler, wrapper: Callable[..., Any]) -> Handler:
        """The handler grpc calls: `wrapper`, given the request as bytes when it is one
        message (the wrapper decodes it, so that bytes that are not the message get
        INVALID_ARGUMENT and are counted), or as a stream whose messages fail with
        MalformedRequest when they do not decode."""
        if handler.request_streaming:
            return _like(handler, wrapper, _strict(handler.request_deserializer, self.request_type))
        return _like(handler, wrapper, None)


def _behavior(handler: Handler) -> Callable[..., Any]:
    behavior = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behavior is not None
    return behavior


def _like(handler: Handler, behavior: Callable[..., Any], decode: Decoder | None) -> Handler:
    """A handler of the same kind and response serializer as `handler`, running
    `behavior` on requests that `decode` deserializes."""
    encode = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behavior, decode, encode)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behavior, decode, encode)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behavior, decode, encode)
    return grpc.stream_stream_rpc_method_handler(behavior, decode, encode)


class MeshInterceptor:
    """Guards handlers as servicers register them (see Registrar): each method's handler
    is wrapped once, the wrapper then serving every call to it.

    A call is authorised and counted first; if it is traced (the `sampler` picked it,
    or its caller's traceparent asks), the rest of it (the servicer, error mapping,
    its latency's end) runs inside the span of the `tracing` interceptor
    (OpenTelemetry's). A call not traced never enters it. With `faults`, an admitted
    call of a method that has a fault armed may be delayed or failed before its handler.
    """

    def __init__(
        self,
        authz: AuthzTable,
        metrics: ServerMetrics,
        *,
        tracing: grpc.aio.ServerInterceptor | None = None,
        sampler: HeadSampler | None = None,
        caller_sans: CallerSans | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self._authz = authz
        self._metrics = metrics
        self._tracing = tracing
        self._sampler = sampler
        self._caller_sans = caller_sans or peer_sans
        self._faults = faults

    @property
    def caller_sans(self) -> CallerSans:
        """Where this server's calls' caller identities come from."""
        return self._caller_sans

    def guard(self, method: str, handler: Handler) -> Handler:
        """`handler`, the handler of `method` ("/pkg.Svc/M"), guarded."""
        kind = grpc_type(handler.request_streaming, handler.response_streaming)
        guard = _Guard(
            method,
            self._metrics.method(method, kind),
            self._authz,
            self._tracing,
            self._sampler,
            self._caller_sans,
            self._faults,
        )
        return guard.guarded(handler)

    def registrar(self, server: grpc.aio.Server) -> Registrar:
        """Give this to servicer adders instead of `server`; see Registrar."""
        return Registrar(server, self)


class Registrar:
    """Stands in for a grpc.aio.Server when servicers are added (the generated
    `add_XServicer_to_server(servicer, registrar)`): every method handler they register
    is guarded by the MeshInterceptor, then registered with the server.

    Generated adders hand each service over twice: as method handlers, and as a
    generic handler of the same methods. Only the method handlers are served (the
    server would never ask the generic one); a service that arrives only as a generic
    handler would never be, and `unserved()` names it, so that the runtime refuses to
    start.

    NOTE: grpc.aio's server (1.85) waits on one future per registered method for each
    call it accepts. Serving every method through one generic handler instead, with
    the sampling decided there, was measured (rows 3/5 of bench/, one run each way):
    0.92 and 0.98 against 0.94 registered as here, within the runs' noise, so the
    simpler way won.
    """

    def __init__(self, server: grpc.aio.Server, interceptor: MeshInterceptor) -> None:
        self._server = server
        self._interceptor = interceptor
        self._registered: set[str] = set()
        self._generic: set[str] = set()

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self._registered.add(service)
        guard = self._interceptor.guard
        self._server.add_registered_method_handlers(
            service,
            {name: guard(f"/{service}/{name}", handler) for name, handler in handlers.items()},
        )

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        for handler in handlers:
            if not isinstance(handler, grpc.ServiceRpcHandler):
                raise TypeError("register method handlers: a bare generic handler is not served")
            self._generic.add(handler.service_name())

    def unserved(self) -> list[str]:
        """Services added only as generic handlers: none of their calls is served."""
        return sorted(self._generic - self._registered)
