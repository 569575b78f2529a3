"""A channel to a whole service: what generated stubs call when they call through the mesh.

`ServiceChannel` looks like a grpc.aio.Channel to generated stubs (`unary_unary`, ...),
but each call picks an endpoint of the service from the set its EndpointSource keeps
current: first a version, by the service's weights (mesh.client._weights: smooth
weighted round-robin; a version of weight 0 gets no call), then round-robin among that
version's endpoints, skipping endpoints whose connection is failing or whose breaker is
open; when the version has none left, the other versions of weight > 0 take the call,
heaviest first. A service without weights balances over all its endpoints alike.
Only methods whose proto declares `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT are
retried, on another endpoint when there is one, with exponential backoff and jitter:
after UNAVAILABLE (but not after a DependencyFailed, which the instance's own client has
retried already), and after an attempt that outlived the per-try timeout; and only
while the service's retry budget (mesh.client._budget) allows one. Every call gets what
is left of one deadline: the caller's timeout, the inbound call's deadline or the
default; an idempotent call's attempt gets at most the per-try timeout of it. Breakers
hear only what says an endpoint is unhealthy (mesh.client._outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from mesh import inbound
from mesh.backoff import Backoff
from mesh.client._breaker import Admission, EndpointBreaker
from mesh.client._budget import RetryBudgetMeter
from mesh.client._outcome import health_code, is_dependency_failure
from mesh.client._weights import SmoothWeighted, WeightsOf
from mesh.config import ClientPolicy, RetryBudget
from mesh.errors import CircuitOpen, NoEndpoints
from mesh.registry import Endpoint, EndpointSource
from mesh.tasks import cancel_and_wait, start_background
from mesh.telemetry import ClientMetrics, activate_unsampled

__all__ = ["ServiceChannel", "is_idempotent"]

log = logging.getLogger("mesh.client")

Dial = Callable[[Endpoint], grpc.aio.Channel]
Serializer = Callable[[Any], bytes] | None

_SAFE_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


@functools.cache
def is_idempotent(full_method: str) -> bool:
    """Whether the method's proto declares it safe to repeat ("/pkg.Service/Method")."""
    name = full_method.lstrip("/").replace("/", ".")
    try:
        method = descriptor_pool.Default().FindMethodByName(name)
    except KeyError:
        return False
    return method.GetOptions().idempotency_level in _SAFE_LEVELS


class _Member:
    """One endpoint in the pool: its channel, its breaker, its multicallables."""

    def __init__(
        self, endpoint: Endpoint, channel: grpc.aio.Channel, breaker: EndpointBreaker
    ) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.breaker = breaker
        self.callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    def failing(self) -> bool:
        state = self.channel.get_state(try_to_connect=False)
        return state is grpc.ChannelConnectivity.TRANSIENT_FAILURE


class _Group:
    """Endpoints that share one round-robin position: one version's, or, for a service
    without weights, all of its endpoints."""

    __slots__ = ("members", "next")

    def __init__(self, members: list[_Member], next_: int = 0) -> None:
        self.members = members
        self.next = next_


_Route = tuple[_Group, ...]
"""Where a call may go, in order of preference: the groups of its version and then of
the other versions of weight > 0, heaviest first; never an empty group."""


def _preferring(first: _Group, ranked: Sequence[_Group]) -> _Route:
    """`first`, then the other groups of `ranked` in their order, leaving out empty ones."""
    return tuple(g for g in (first, *(g for g in ranked if g is not first)) if g.members)


@dataclass(frozen=True)
class _Pick:
    member: _Member
    admission: Admission


class ServiceChannel:
    """Client-side balanced, resilient channel to every instance of `service`."""

    def __init__(
        self,
        service: str,
        source: EndpointSource,
        dial: Dial,
        policy: ClientPolicy,
        *,
        metrics: ClientMetrics | None = None,
        backoff: Backoff | None = None,
        breaker_factory: Callable[[Endpoint], EndpointBreaker] | None = None,
        weights: WeightsOf | None = None,
        retry_budget: RetryBudgetMeter | None = None,
    ) -> None:
        """`weights` gives the service's current weight per version (see
        mesh.client._weights; None: every endpoint alike); `retry_budget` counts its
        calls and retries (default: RetryBudget's defaults)."""
        self.service = service
        self._source = source
        self._dial = dial
        self._policy = policy
        self._metrics = metrics
        retry = policy.retry
        self._backoff = backoff or Backoff(
            initial=retry.initial_backoff,
            maximum=retry.max_backoff,
            multiplier=retry.multiplier,
            jitter=retry.jitter,
        )
        self._breaker_factory = breaker_factory or self._default_breaker
        self._retry_budget = retry_budget or RetryBudgetMeter(RetryBudget())
        self._members: dict[str, _Member] = {}
        self._order: list[_Member] = []
        # Routing, rebuilt when the endpoints or the weights change, never per call:
        self._weights_of = weights
        self._weights: dict[str, int] = {}  # the weights the routes were built for
        self._ranked: list[str] = []  # versions of weight > 0, heaviest first
        self._split: SmoothWeighted[str] | None = None  # None: no weights, no version pick
        self._groups: dict[str | None, _Group] = {}  # by version (None: all endpoints)
        self._routes: dict[str, _Route] = {}  # by version of weight > 0
        self._default_route: _Route = ()  # no weights: all endpoints; else heaviest first
        self._ready = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self._task = start_background(self._follow(), f"endpoints of {service}")

    # -- what generated stubs call ------------------------------------------------

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> _UnaryUnary:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> _UnaryStream:
        return _UnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> _StreamUnary:
        return _StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> _StreamStream:
        return _StreamStream(self, method, request_serializer, response_deserializer)

    # -- introspection ---------------------------------------------------------------

    @property
    def policy(self) -> ClientPolicy:
        """The policy its calls follow (for a DirectDataPlane's: see service_policy)."""
        return self._policy

    def endpoints(self) -> list[Endpoint]:
        return [member.endpoint for member in self._order]

    def breaker(self, instance_id: str) -> EndpointBreaker:
        return self._members[instance_id].breaker

    async def wait_for_endpoints(self, timeout: float) -> None:
        """Wait until the first endpoint set has arrived (it may be empty)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    # -- membership ------------------------------------------------------------------

    def _default_breaker(self, endpoint: Endpoint) -> EndpointBreaker:
        def on_change(_: str, state: str) -> None:
            if self._metrics is not None:
                self._metrics.breaker_open.labels(self.service, endpoint.instance_id).set(
                    0 if state == "closed" else 1
                )

        return EndpointBreaker(
            endpoint.instance_id, self._policy.breaker, on_state_change=on_change
        )

    async def _follow(self) -> None:
        async for endpoints in self._source.endpoints(self.service):
            self._apply(endpoints)

    def _apply(self, endpoints: frozenset[Endpoint]) -> None:
        members: dict[str, _Member] = {}
        for endpoint in endpoints:
            member = self._members.get(endpoint.instance_id)
            if member is not None and member.endpoint.address == endpoint.address:
                member.endpoint = endpoint
            else:
                if member is not None:
                    self._retire(member)
                member = _Member(endpoint, self._dial(endpoint), self._breaker_factory(endpoint))
            members[endpoint.instance_id] = member
        for instance_id in self._members.keys() - members.keys():
            self._retire(self._members[instance_id])
        self._members = members
        self._order = sorted(members.values(), key=lambda m: m.endpoint.instance_id)
        self._regroup()
        log.info("%s endpoints: %s", self.service, [m.endpoint.address for m in self._order])
        self._ready.set()

    def _set_weights(self, weights: Mapping[str, int]) -> None:
        self._weights = current = dict(weights)
        # Versions of weight 0 get no call, not even when the others have no endpoint.
        self._ranked = sorted(
            (v for v, w in current.items() if w > 0), key=lambda v: (-current[v], v)
        )
        self._split = (
            SmoothWeighted([(v, current[v]) for v in self._ranked]) if self._ranked else None
        )
        log.info("%s weights: %s", self.service, current or "none, every endpoint alike")
        self._regroup()

    def _regroup(self) -> None:
        """Group the endpoints by weighted version (all in one group without weights)
        and precompute each version's route. Each group keeps its round-robin position
        across regroupings."""
        previous = self._groups

        def group(version: str | None, members: list[_Member]) -> _Group:
            kept = previous.get(version)
            return _Group(members, kept.next if kept is not None else 0)

        if self._split is None:
            everyone = group(None, self._order)
            self._groups, self._routes = {None: everyone}, {}
            self._default_route = (everyone,) if everyone.members else ()
            return
        ranked = self._ranked
        groups: dict[str | None, _Group] = {
            v: group(v, [m for m in self._order if m.endpoint.version == v]) for v in ranked
        }
        heaviest_first = [groups[v] for v in ranked]
        self._groups = groups
        self._routes = {v: _preferring(groups[v], heaviest_first) for v in ranked}
        self._default_route = tuple(g for g in heaviest_first if g.members)

    def _retire(self, member: _Member) -> None:
        # Calls already on the way finish; the channel closes when they have.
        task = asyncio.get_running_loop().create_task(
            member.channel.close(grace=self._policy.timeout)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        if self._metrics is not None:
            with contextlib.suppress(KeyError):  # a series exists only once a breaker moved
                self._metrics.breaker_open.remove(self.service, member.endpoint.instance_id)

    @contextlib.contextmanager
    def _measured(self, method: str, kind: str) -> Iterator[None]:
        """Count one logical call (retries included) with the code it ended with."""
        stats = self._metrics.method(method, kind) if self._metrics else None
        if stats is None:
            yield
            return
        stats.start()
        started, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            yield
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            stats.finish(code, time.perf_counter() - started)

    # -- picking and calling -------------------------------------------------------

    def _version(self) -> str | None:
        """The version the next call goes to, by weight (None: the service has no
        weights). The weights are looked up on every call, but the routes are rebuilt
        only when they have changed."""
        if self._weights_of is not None:
            weights = self._weights_of()
            if weights != self._weights:
                self._set_weights(weights)
        split = self._split
        return split.next() if split is not None else None

    def _pick(self, version: str | None, tried: set[str], last: str | None = None) -> _Pick:
        """The next endpoint for a call to `version` (see _version) that may take a call
        now, not one already `tried` by this call: round-robin among the version's
        endpoints, then among those of the other versions of weight > 0, heaviest first.
        A group's position moves past the endpoint chosen, so skipping one endpoint
        does not give its successor a double share. When every endpoint has been tried,
        it starts over, but not with `last` (the one that just failed) while there is
        another."""
        route = self._default_route if version is None else self._routes.get(version)
        if route is None:  # the call's version lost its weight since the call began
            route = self._default_route
        if not route:
            raise NoEndpoints(self.service)
        size = 0
        failing: tuple[_Group, int, _Member] | None = None
        soonest: tuple[float, str] | None = None
        for group in route:
            members, start = group.members, group.next
            size += len(members)
            for offset in range(len(members)):
                candidate = members[(start + offset) % len(members)]
                if candidate.endpoint.instance_id in tried:
                    continue
                if candidate.failing():
                    failing = failing or (group, start + offset, candidate)
                    continue
                admission = candidate.breaker.admit()
                if admission is not None:
                    group.next = start + offset + 1
                    return _Pick(candidate, admission)
                wait = candidate.breaker.retry_after()
                if soonest is None or wait < soonest[0]:
                    soonest = (wait, candidate.endpoint.address)
        if failing is not None:
            # Every healthy-looking endpoint is out; a failing connection may be back.
            group, position, member = failing
            admission = member.breaker.admit()
            if admission is not None:
                group.next = position + 1
                return _Pick(member, admission)
        if tried:
            again = {last} if last is not None and size > 1 else set()
            return self._pick(version, again if again != tried else set())
        if soonest is not None:
            raise CircuitOpen(self.service, soonest[1], soonest[0])
        raise NoEndpoints(self.service)

    def _budget(self, timeout: float | None) -> float:
        inherited = inbound.remaining()
        budgets = [b for b in (timeout, inherited) if b is not None]
        return min(budgets) if budgets else self._policy.timeout

    async def _begin(self, until: float) -> str | None:
        """Start a call that must end by `until`: wait for the first endpoint set if it
        has not come yet, count the call for the retry budget, and pick its version
        (its retries stay with it, as Envoy's stay in the cluster picked)."""
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - time.monotonic())):
                    await self._ready.wait()
        self._retry_budget.record_call()
        return self._version()

    async def call_unary(
        self,
        method: str,
        make: Callable[[grpc.aio.Channel], grpc.aio.UnaryUnaryMultiCallable[Any, Any]],
        request: Any,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
    ) -> tuple[Any, grpc.aio.UnaryUnaryCall[Any, Any]]:
        """The response, and the call (its last attempt) that gave it."""
        activate_unsampled()  # an untraced inbound call hands its trace id on, as "not sampled"
        with self._measured(method, "unary"):
            return await self._attempts(method, make, request, timeout, metadata)

    async def _attempts(
        self,
        method: str,
        make: Callable[[grpc.aio.Channel], grpc.aio.UnaryUnaryMultiCallable[Any, Any]],
        request: Any,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
    ) -> tuple[Any, grpc.aio.UnaryUnaryCall[Any, Any]]:
        until = time.monotonic() + self._budget(timeout)
        version = await self._begin(until)
        retryable = is_idempotent(method)
        per_try_timeout = self._policy.retry.per_try_timeout
        tried: set[str] = set()
        attempt = 0
        last: str | None = None
        while True:
            if until - time.monotonic() <= 0:
                raise _deadline_exceeded(self.service, method)
            pick, attempt = await self._pick_or_wait(version, tried, last, attempt, until)
            remaining = until - time.monotonic()
            member = pick.member
            callable_ = member.callables.get(method)
            if callable_ is None:
                callable_ = member.callables[method] = make(member.channel)
            # An idempotent call gives each attempt at most the per-try timeout, so a
            # hung endpoint costs it that, not its whole deadline.
            per_try = min(remaining, per_try_timeout) if retryable else remaining
            try:
                call = callable_(request, timeout=per_try, metadata=metadata)
                response = await call
            except grpc.aio.AioRpcError as error:
                self._failed(pick, error, per_try)
                again = retryable and _retryable(error, cut_by_per_try=per_try < remaining)
                delay = self._retry_wait(attempt, until) if again else None
                if delay is None:
                    raise
                last = member.endpoint.instance_id
                tried.add(last)
                attempt += 1
                self._count_retry(method)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                # Cancelled, or failed in this process: nothing learnt about the endpoint,
                # but a half-open breaker's one trial slot must be given back.
                member.breaker.abandon(pick.admission)
                raise
            member.breaker.record(pick.admission, grpc.StatusCode.OK)
            return response, call

    async def _pick_or_wait(
        self, version: str | None, tried: set[str], last: str | None, attempt: int, until: float
    ) -> tuple[_Pick, int]:
        """An endpoint for the next attempt (see _pick), and the attempt count. While no
        endpoint is registered it waits, with backoff, as retries do: nothing was sent,
        so waiting is safe for any method."""
        while True:
            try:
                return self._pick(version, tried, last), attempt
            except NoEndpoints:
                delay = self._retry_delay(attempt, until)
                if delay is None:
                    raise
                attempt += 1
                await asyncio.sleep(delay)

    def _failed(self, pick: _Pick, error: grpc.aio.AioRpcError, attempt_timeout: float) -> None:
        """Tell the picked endpoint's breaker what `error` says about it; the attempt had
        `attempt_timeout` s (a fair chance from the per-try timeout on)."""
        fair = attempt_timeout >= self._policy.retry.per_try_timeout
        pick.member.breaker.record(pick.admission, health_code(error, fair_chance=fair))

    def _count_retry(self, method: str) -> None:
        if self._metrics:
            self._metrics.retries.labels(*method.lstrip("/").split("/", 1)).inc()

    def _retry_wait(self, attempt: int, until: float) -> float | None:
        """How long to wait before retrying a failed attempt, or None if the call ends
        with its failure: no attempt or time left (see _retry_delay), or the retry
        budget is spent (then retrying would only add load to an overloaded service)."""
        delay = self._retry_delay(attempt, until)
        if delay is None:
            return None
        if not self._retry_budget.allow_retry():
            log.debug("%s: retry budget spent, a failed call is not retried", self.service)
            return None
        return delay

    def _retry_delay(self, attempt: int, until: float) -> float | None:
        """How long to wait before retry number `attempt`, or None if no retry is left
        or the wait would end past the deadline."""
        if attempt + 1 >= self._policy.retry.max_attempts:
            return None
        delay = self._backoff.delay(attempt)
        return delay if time.monotonic() + delay < until else None

    async def close(self) -> None:
        """Stop following endpoints and close every channel."""
        await cancel_and_wait(self._task)
        members, self._members, self._order = list(self._members.values()), {}, []
        self._regroup()
        await asyncio.gather(
            *(m.channel.close() for m in members), *self._closing, return_exceptions=True
        )


def _retryable(error: grpc.aio.AioRpcError, *, cut_by_per_try: bool) -> bool:
    """Whether an idempotent call's failed attempt is worth another: the endpoint was
    unavailable (unless it answered that its own dependency was: retrying that would
    multiply attempts at every hop), or it did not answer within the per-try timeout."""
    if is_dependency_failure(error):
        return False
    code = error.code()
    return code is grpc.StatusCode.UNAVAILABLE or (
        code is grpc.StatusCode.DEADLINE_EXCEEDED and cut_by_per_try
    )


def _deadline_exceeded(service: str, method: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=f"deadline exceeded before calling {service} {method}",
    )


class _UnaryUnary:
    """What a generated stub attribute such as `stub.GetStock` is bound to."""

    def __init__(
        self,
        owner: ServiceChannel,
        method: str,
        serializer: Serializer,
        deserializer: Callable[[bytes], Any] | None,
    ) -> None:
        self._owner = owner
        self._method = method

        def make(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
            return channel.unary_unary(
                method, request_serializer=serializer, response_deserializer=deserializer
            )

        self._make = make

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        **_: Any,
    ) -> _UnaryCall:
        return _UnaryCall(
            self._owner.call_unary(self._method, self._make, request, timeout, metadata)
        )


class _UnaryCall:
    """A unary call as grpc.aio's is to its caller: awaited for the response, then
    asked for the response's metadata (that of the attempt that answered)."""

    __slots__ = ("_call", "_outcome")

    def __init__(
        self, outcome: Coroutine[Any, Any, tuple[Any, grpc.aio.UnaryUnaryCall[Any, Any]]]
    ) -> None:
        self._outcome = outcome
        self._call: grpc.aio.UnaryUnaryCall[Any, Any] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        response, self._call = yield from self._outcome.__await__()
        return response

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._call is None:
            raise RuntimeError("await the call before asking for its metadata")
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        if self._call is None:
            raise RuntimeError("await the call before asking for its metadata")
        return await self._call.trailing_metadata()


class _Shape:
    """What the stub-facing callables of every shape share: their channel, method and
    (de)serializers."""

    def __init__(
        self,
        owner: ServiceChannel,
        method: str,
        serializer: Serializer,
        deserializer: Callable[[bytes], Any] | None,
    ) -> None:
        self._owner = owner
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def _options(self) -> dict[str, Any]:
        return {
            "request_serializer": self._serializer,
            "response_deserializer": self._deserializer,
        }

    async def _start(self, timeout: float | None) -> tuple[_Pick, float]:
        """The endpoint for a call that is never retried, and its whole budget."""
        owner = self._owner
        until = time.monotonic() + owner._budget(timeout)
        version = await owner._begin(until)
        pick, _ = await owner._pick_or_wait(version, set(), None, 0, until)
        return pick, until - time.monotonic()


class _UnaryStream(_Shape):
    """Server-streaming calls: balanced like unary ones, with the whole deadline (a
    stream's length is its own, so no per-try timeout). An idempotent one that fails
    with UNAVAILABLE before its first message is retried like a unary call; once a
    message has arrived, never (its caller has seen part of it)."""

    async def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        **_: Any,
    ) -> AsyncIterator[Any]:
        owner, method = self._owner, self._method
        activate_unsampled()
        with owner._measured(method, "server_stream"):
            until = time.monotonic() + owner._budget(timeout)
            version = await owner._begin(until)
            retryable = is_idempotent(method)
            tried: set[str] = set()
            last: str | None = None
            attempt = 0
            while True:
                pick, attempt = await owner._pick_or_wait(version, tried, last, attempt, until)
                budget = until - time.monotonic()
                call = pick.member.channel.unary_stream(method, **self._options())(
                    request, timeout=budget, metadata=metadata
                )
                received = False
                try:
                    async for item in call:
                        received = True
                        yield item
                except grpc.aio.AioRpcError as error:
                    owner._failed(pick, error, budget)
                    again = retryable and not received and _retryable(error, cut_by_per_try=False)
                    delay = owner._retry_wait(attempt, until) if again else None
                    if delay is None:
                        raise
                    last = pick.member.endpoint.instance_id
                    tried.add(last)
                    attempt += 1
                    owner._count_retry(method)
                    await asyncio.sleep(delay)
                    continue
                except BaseException:
                    # The consumer went away, or this process failed: nothing learnt
                    # about the endpoint, but a half-open trial slot must be given back.
                    pick.member.breaker.abandon(pick.admission)
                    call.cancel()
                    raise
                pick.member.breaker.record(pick.admission, grpc.StatusCode.OK)
                return


class _StreamUnary(_Shape):
    """Client-streaming calls: balanced, with the whole deadline, never retried (the
    request stream is consumed as it is sent, so it cannot be sent again)."""

    async def __call__(
        self,
        request_iterator: AsyncIterator[Any] | Iterator[Any],
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        **_: Any,
    ) -> Any:
        owner = self._owner
        activate_unsampled()
        with owner._measured(self._method, "client_stream"):
            pick, budget = await self._start(timeout)
            call = pick.member.channel.stream_unary(self._method, **self._options())(
                request_iterator, timeout=budget, metadata=metadata
            )
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                owner._failed(pick, error, budget)
                raise
            except BaseException:
                pick.member.breaker.abandon(pick.admission)
                call.cancel()
                raise
            pick.member.breaker.record(pick.admission, grpc.StatusCode.OK)
            return response


class _StreamStream(_Shape):
    """Bidirectional streams: balanced, with the whole deadline, never retried."""

    async def __call__(
        self,
        request_iterator: AsyncIterator[Any] | Iterator[Any],
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        **_: Any,
    ) -> AsyncIterator[Any]:
        owner = self._owner
        activate_unsampled()
        with owner._measured(self._method, "bidi_stream"):
            pick, budget = await self._start(timeout)
            call = pick.member.channel.stream_stream(self._method, **self._options())(
                request_iterator, timeout=budget, metadata=metadata
            )
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as error:
                owner._failed(pick, error, budget)
                raise
            except BaseException:
                pick.member.breaker.abandon(pick.admission)
                call.cancel()
                raise
            pick.member.breaker.record(pick.admission, grpc.StatusCode.OK)
