"""One server interceptor for what every call needs: authorisation by SPIFFE id, RED
metrics, the deadline handed on to downstream calls, and the one table that turns
exceptions into gRPC statuses."""

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
from mesh.authz import AuthzTable
from mesh.problems import Problem
from mesh.telemetry import MethodMetrics, ServerMetrics, grpc_type

__all__ = ["MeshInterceptor"]

log = logging.getLogger("mesh.server")

_DETAILS_KEY = "grpc-status-details-bin"
# Downstream failures a caller may retry keep their code; anything else is a bug here.
_PASS_THROUGH = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _cancel_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Call:
    """One call's bookkeeping: when it started, and whether it has been counted."""

    __slots__ = ("counted", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.counted = False


class _Guard:
    """The per-method half of the interceptor: metrics children and the method name.

    NOTE: grpc.aio's context.abort() sends the status before it raises, so a call is
    counted before we abort it; otherwise a caller could see its error before /metrics
    does. (A servicer that calls context.abort() itself is counted just after.)
    """

    def __init__(self, method: str, stats: MethodMetrics, authz: AuthzTable) -> None:
        self.method = method
        self.stats = stats
        self.authz = authz

    def count(self, call: _Call, code: grpc.StatusCode) -> None:
        if not call.counted:
            call.counted = True
            self.stats.handled(code).inc()
            self.stats.handling.observe(time.perf_counter() - call.started)

    async def enter(self, context: grpc.aio.ServicerContext[Any, Any], call: _Call) -> None:
        """Count the call, authorise the caller and record its deadline."""
        self.stats.started.inc()
        spiffe = next(iter(context.auth_context().get("peer_spiffe_id", ())), None)
        decision = self.authz.check(spiffe.decode() if spiffe else None, self.method)
        if not decision.allowed:
            self.count(call, grpc.StatusCode.PERMISSION_DENIED)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{decision.caller} may not call {self.method} ({decision.reason})",
            )
        deadline.inherit(context.time_remaining())

    async def fail(
        self, error: Exception, context: grpc.aio.ServicerContext[Any, Any], call: _Call
    ) -> None:
        """Count, then abort the call with the status `error` stands for."""
        if isinstance(error, grpc.aio.AbortError):
            raise error  # already aborted: by enter() (counted) or by the servicer
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
        self.count(call, code)
        await context.abort(code, message, trailing_metadata=trailing)

    def finish(
        self, context: grpc.aio.ServicerContext[Any, Any], call: _Call, cancelled: bool
    ) -> None:
        """Count a call that ended without our abort: returned, or cancelled by grpc."""
        code = context.code()
        if not isinstance(code, grpc.StatusCode):
            code = _cancel_code(context) if cancelled else grpc.StatusCode.OK
        self.count(call, code)

    def unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call, cancelled = _Call(), False
            try:
                await self.enter(context, call)
                return await behavior(request, context)
            except asyncio.CancelledError:
                cancelled = True  # grpc cancels the handler when the caller leaves or times out
                raise
            except Exception as error:
                await self.fail(error, context, call)
            finally:
                self.finish(context, call, cancelled)

        return handle

    def streaming(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                call, cancelled = _Call(), False
                try:
                    await self.enter(context, call)
                    async for item in behavior(request, context):
                        yield item
                except asyncio.CancelledError:
                    cancelled = True
                    raise
                except Exception as error:
                    await self.fail(error, context, call)
                finally:
                    self.finish(context, call, cancelled)

            return stream
        return self.unary(behavior)  # a coroutine that writes with context.write()


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once and reuses the wrapper for every call that the
    server routes to that same handler. (Keyed by handler, not by method name, so one
    interceptor may serve several servers, as in-process tests do.)"""

    def __init__(self, authz: AuthzTable, metrics: ServerMetrics) -> None:
        self._authz = authz
        self._metrics = metrics
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
        return entry[1]

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
