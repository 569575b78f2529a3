"""One server interceptor for what every call needs: authorisation by SPIFFE id, RED
metrics, the deadline handed on to downstream calls, the one table that turns
exceptions into gRPC statuses, and the choice of which calls OpenTelemetry traces."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import format_trace_id

from mesh import deadline
from mesh.authz import AuthzTable, Decision
from mesh.problems import Problem
from mesh.telemetry import MethodMetrics, ServerMetrics, grpc_type

__all__ = ["MeshInterceptor"]

log = logging.getLogger("mesh.server")

_DETAILS_KEY = "grpc-status-details-bin"
# Downstream failures a caller may retry keep their code; anything else is a bug here.
_PASS_THROUGH = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's SPIFFE id: its certificate's one spiffe:// URI SAN, else None.

    NOTE: peer_identities() (the SANs, as the TLS handshake set them) costs a tenth of
    auth_context(), which copies the whole certificate on every call. Exactly one
    spiffe:// SAN is required, as for grpc's own peer_spiffe_id.
    """
    uris = [i for i in context.peer_identities() or () if i.startswith(b"spiffe://")]
    return uris[0].decode() if len(uris) == 1 else None


def _cancel_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Guard:
    """The per-method half of the interceptor: metrics children and the method name.

    Every call is counted exactly once, on the branch where it ends.
    NOTE: grpc.aio's context.abort() sends the status before it raises, so a call is
    counted before we abort it; otherwise a caller could see its error before /metrics
    does. (A servicer that calls context.abort() itself is counted just after.)
    """

    def __init__(self, method: str, stats: MethodMetrics, authz: AuthzTable) -> None:
        self.method = method
        self.stats = stats
        self.authz = authz

    def record(self, code: grpc.StatusCode, started: float) -> None:
        self.stats.finish(code, time.perf_counter() - started)

    def admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> Decision:
        """Count the call start; if the caller may call this method, hand its deadline
        on to downstream calls."""
        self.stats.start()
        decision = self.authz.check(_caller(context), self.method)
        if decision.allowed:
            deadline.inherit_from(context)
        return decision

    async def deny(
        self, decision: Decision, context: grpc.aio.ServicerContext[Any, Any], started: float
    ) -> None:
        self.record(grpc.StatusCode.PERMISSION_DENIED, started)
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{decision.caller} may not call {self.method} ({decision.reason})",
        )

    async def fail(
        self, error: BaseException, context: grpc.aio.ServicerContext[Any, Any], started: float
    ) -> None:
        """Count the failed call and, unless grpc has already ended it, abort it with
        the status `error` stands for. Always raises."""
        if isinstance(error, grpc.aio.AbortError | asyncio.CancelledError | GeneratorExit):
            # The servicer aborted (status already sent), or grpc ended the handler.
            code = context.code()
            if not isinstance(code, grpc.StatusCode):
                code = _cancel_code(context)
            self.record(code, started)
            raise error
        trailing: tuple[tuple[str, str | bytes], ...] = ()
        if isinstance(error, Problem):
            code, message = error.code, error.message
            trailing = ((_DETAILS_KEY, error.to_status().SerializeToString()),)
        elif isinstance(error, grpc.aio.AioRpcError) and error.code() in _PASS_THROUGH:
            code, message = error.code(), f"a dependency failed: {error.details()}"
        else:
            log.exception("unhandled error in %s", self.method)
            span = trace.get_current_span().get_span_context()
            ref = f" (trace {format_trace_id(span.trace_id)})" if span.is_valid else ""
            code, message = grpc.StatusCode.INTERNAL, f"internal error{ref}"
        self.record(code, started)
        await context.abort(code, message, trailing_metadata=trailing)

    def succeeded(self, context: grpc.aio.ServicerContext[Any, Any], started: float) -> None:
        code = context.code()  # a servicer may set a code and return normally
        self.record(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK, started)

    def unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            decision = self.admit(context)
            if not decision.allowed:
                await self.deny(decision, context, started)
            try:
                response = await behavior(request, context)
            except (Exception, asyncio.CancelledError) as error:
                await self.fail(error, context, started)
            self.succeeded(context, started)
            return response

        return handle

    def streaming(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                decision = self.admit(context)
                if not decision.allowed:
                    await self.deny(decision, context, started)
                try:
                    async for item in behavior(request, context):
                        yield item
                except (Exception, asyncio.CancelledError, GeneratorExit) as error:
                    await self.fail(error, context, started)
                self.succeeded(context, started)

            return stream
        return self.unary(behavior)  # a coroutine that writes with context.write()


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Authorisation, metrics, deadlines and error mapping for every call, and the
    tracing decision: a call the `sampler` picks is handed, already wrapped, to the
    `tracing` interceptor (OpenTelemetry's), whose span then encloses all of it. A
    call not picked never enters it, which on a Python server saves more per call
    than the rest of this interceptor costs.

    Each handler is wrapped once and the wrapper reused for every call the server
    routes to it (keyed by handler, so one interceptor may serve several servers).
    """

    def __init__(
        self,
        authz: AuthzTable,
        metrics: ServerMetrics,
        *,
        tracing: grpc.aio.ServerInterceptor | None = None,
        sampler: Callable[[grpc.HandlerCallDetails], bool] | None = None,
    ) -> None:
        self._authz = authz
        self._metrics = metrics
        self._tracing = tracing
        self._sampler = sampler
        # id(handler) -> (handler, wrapper); holding the handler keeps its id unique.
        self._wrapped: dict[int, tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: the server answers UNIMPLEMENTED
        entry = self._wrapped.get(id(handler))
        if entry is None:
            entry = (handler, self._wrap(handler_call_details.method, handler))
            self._wrapped[id(handler)] = entry
        wrapped = entry[1]
        if self._tracing is None or (self._sampler and not self._sampler(handler_call_details)):
            return wrapped

        async def guarded(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
            return wrapped

        return await self._tracing.intercept_service(guarded, handler_call_details)

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        kind = grpc_type(handler.request_streaming, handler.response_streaming)
        guard = _Guard(method, self._metrics.method(method, kind), self._authz)
        decode, encode = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                guard.unary(handler.unary_unary), decode, encode
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                guard.streaming(handler.unary_stream), decode, encode
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                guard.unary(handler.stream_unary), decode, encode
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            guard.streaming(handler.stream_stream), decode, encode
        )
