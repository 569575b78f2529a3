"""mesh.client.ServiceChannel over a fake EndpointSource and fake per-endpoint channels:
round-robin, membership, skipping failing endpoints, breakers, retries and deadlines."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from shop.inventory.v1 import inventory_pb2  # noqa: F401  (fills the descriptor pool)

from mesh import inbound
from mesh.backoff import Backoff
from mesh.client import EndpointBreaker, ServiceChannel, is_idempotent
from mesh.config import BreakerPolicy, ClientPolicy, RetryPolicy
from mesh.errors import CircuitOpen, NoEndpoints
from mesh.problems import DependencyFailed, Problem, Unavailable
from mesh.registry import Endpoint
from mesh.telemetry import ClientMetrics
from tests.harness import shapes

SERVICE = "inventory"
GET_STOCK = "/shop.inventory.v1.InventoryService/GetStock"  # NO_SIDE_EFFECTS
RESERVE_STOCK = "/shop.inventory.v1.InventoryService/ReserveStock"  # IDEMPOTENT
ADJUST_STOCK = "/shop.inventory.v1.InventoryService/AdjustStock"  # default level
THRESHOLD = 3
POLICY = ClientPolicy(
    timeout=1.0,
    # No per-try cap unless a test asks for one: attempts get what is left of the deadline.
    retry=RetryPolicy(max_attempts=3, per_try_timeout=60.0),
    breaker=BreakerPolicy(failure_threshold=THRESHOLD, reset_timeout=60.0),
)
TINY = Backoff(initial=0.001, maximum=0.001, jitter=0.0)
_T = TypeVar("_T")


def endpoint(name: str, port: int = 50061) -> Endpoint:
    return Endpoint(service=SERVICE, instance_id=name, address=f"10.0.0.{ord(name)}:{port}")


A, B, C = endpoint("a"), endpoint("b"), endpoint("c")


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


def serialize(request: Any) -> bytes:
    return repr(request).encode()


def deserialize(raw: bytes) -> Any:
    return raw


class Within:
    """A deadline `seconds` from now, as an inbound call's context would have it."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def time_remaining(self) -> float:
        return self._at - time.monotonic()


class FakeSource:
    """An EndpointSource fed by the test: each publish() is one new endpoint set."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[frozenset[Endpoint]] = asyncio.Queue()

    def publish(self, *endpoints: Endpoint) -> None:
        self.queue.put_nowait(frozenset(endpoints))

    async def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]:
        assert service == SERVICE
        while True:
            yield await self.queue.get()


@dataclass(frozen=True)
class Call:
    instance_id: str
    method: str
    request: Any
    timeout: float | None


class FakeChannel:
    """Stands in for one endpoint's grpc.aio.Channel."""

    def __init__(self, endpoint: Endpoint, dialer: Dialer) -> None:
        self.endpoint = endpoint
        self.dialer = dialer
        self.state = grpc.ChannelConnectivity.READY
        self.closed = asyncio.Event()
        self.close_grace: float | None = None

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        assert try_to_connect is False
        return self.state

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        assert request_serializer is serialize
        assert response_deserializer is deserialize

        async def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            instance_id = self.endpoint.instance_id
            self.dialer.calls.append(Call(instance_id, method, request, timeout))
            if instance_id in self.dialer.crashes:
                raise RuntimeError("failed in this process, not at the endpoint")
            if instance_id in self.dialer.hung:  # answers nothing: grpc's deadline ends it
                await asyncio.sleep(timeout if timeout is not None else 3600)
                raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
            failure = self.dialer.failures.get(instance_id)
            if isinstance(failure, grpc.aio.AioRpcError):
                raise failure
            if failure is not None:
                raise rpc_error(failure)
            return f"reply from {instance_id}"

        return call

    def unary_stream(self, method: str, **_: Any) -> Callable[..., AsyncIterator[Any]]:
        """Three messages, or the instance's failure: before the first message, or,
        for one in `breaks_midway`, after it."""

        async def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            instance_id = self.endpoint.instance_id
            self.dialer.calls.append(Call(instance_id, method, request, timeout))
            failure = self.dialer.failures.get(instance_id)
            for index in range(3):
                if failure is not None and (
                    index == 1 or instance_id not in self.dialer.breaks_midway
                ):
                    raise rpc_error(failure) if isinstance(failure, grpc.StatusCode) else failure
                yield f"{instance_id}:{index}"

        return call

    def stream_unary(self, method: str, **_: Any) -> Callable[..., Awaitable[Any]]:
        """Answers with every request it read, joined."""

        async def call(requests: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            instance_id = self.endpoint.instance_id
            self.dialer.calls.append(Call(instance_id, method, "stream", timeout))
            read = [item async for item in requests]
            self._fail_if_told()
            return f"{instance_id} read {'+'.join(read)}"

        return call

    def stream_stream(self, method: str, **_: Any) -> Callable[..., AsyncIterator[Any]]:
        """Echoes every request it reads."""

        async def call(requests: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            instance_id = self.endpoint.instance_id
            self.dialer.calls.append(Call(instance_id, method, "stream", timeout))
            self._fail_if_told()
            async for item in requests:
                yield f"{instance_id} echoes {item}"

        return call

    def _fail_if_told(self) -> None:
        failure = self.dialer.failures.get(self.endpoint.instance_id)
        if isinstance(failure, grpc.aio.AioRpcError):
            raise failure
        if failure is not None:
            raise rpc_error(failure)

    async def close(self, grace: float | None = None) -> None:
        self.close_grace = grace
        self.closed.set()


class Dialer:
    """The `dial` function: one FakeChannel per endpoint, and every call they receive.
    An instance id in `failures` answers every call with that code (or error); one in
    `hung` never answers."""

    def __init__(self) -> None:
        self.channels: dict[str, list[FakeChannel]] = {}
        self.calls: list[Call] = []
        self.failures: dict[str, grpc.StatusCode | grpc.aio.AioRpcError] = {}
        self.crashes: set[str] = set()
        self.hung: set[str] = set()
        self.breaks_midway: set[str] = set()

    def __call__(self, endpoint: Endpoint) -> Any:
        channel = FakeChannel(endpoint, self)
        self.channels.setdefault(endpoint.instance_id, []).append(channel)
        return channel

    def channel(self, instance_id: str) -> FakeChannel:
        return self.channels[instance_id][-1]

    def called(self) -> list[str]:
        return [call.instance_id for call in self.calls]


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def dialer() -> Dialer:
    return Dialer()


@pytest.fixture
async def make(
    source: FakeSource, dialer: Dialer
) -> AsyncIterator[Callable[..., Awaitable[ServiceChannel]]]:
    """Opens ServiceChannels on the fake source and dialer, waiting for the first set
    when one was published; closes them all afterwards."""
    opened: list[ServiceChannel] = []

    async def open_channel(
        policy: ClientPolicy = POLICY, backoff: Backoff = TINY, **kwargs: Any
    ) -> ServiceChannel:
        channel = ServiceChannel(SERVICE, source, dialer, policy, backoff=backoff, **kwargs)
        opened.append(channel)
        if not source.queue.empty():
            await channel.wait_for_endpoints(1.0)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()


async def call(
    channel: ServiceChannel, method: str = GET_STOCK, timeout: float | None = None
) -> Any:
    rpc = channel.unary_unary(
        method, request_serializer=serialize, response_deserializer=deserialize
    )
    return await rpc("request", timeout=timeout)


async def eventually(predicate: Callable[[], bool], polls: int = 1000) -> None:
    """Wait, a millisecond at a time and at most about a second, until `predicate` holds."""
    for _ in range(polls):
        if predicate():
            return
        await asyncio.sleep(0.001)
    pytest.fail("the channel did not catch up with the endpoint set")


async def in_own_context(action: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run `action` in a task, so a deadline it inherits does not leak into other tests."""
    return await asyncio.create_task(action())


def open_breaker(channel: ServiceChannel, instance_id: str) -> None:
    breaker = channel.breaker(instance_id)
    for _ in range(THRESHOLD):
        admission = breaker.admit()
        assert admission is not None
        breaker.record(admission, grpc.StatusCode.UNAVAILABLE)
    assert breaker.state == "open"


# -- balancing and membership -------------------------------------------------------------


async def test_calls_go_round_robin_in_instance_id_order(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(C, A, B)
    channel = await make()

    replies = [await call(channel) for _ in range(7)]

    assert channel.endpoints() == [A, B, C]
    assert dialer.called() == ["a", "b", "c", "a", "b", "c", "a"]
    assert replies[:3] == ["reply from a", "reply from b", "reply from c"]
    assert {c.method for c in dialer.calls} == {GET_STOCK}
    assert {c.request for c in dialer.calls} == {"request"}


async def test_a_call_before_the_first_endpoint_set_waits_for_it(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    channel = await make()
    pending = asyncio.create_task(call(channel, timeout=1.0))
    await asyncio.sleep(0.01)
    assert not pending.done()

    source.publish(A)

    assert await asyncio.wait_for(pending, 1.0) == "reply from a"


async def test_added_and_removed_endpoints_take_effect(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    await call(channel)

    source.publish(A, B, C)
    await eventually(lambda: channel.endpoints() == [A, B, C])
    source.publish(A, C)
    await eventually(lambda: channel.endpoints() == [A, C])
    dialer.calls.clear()
    for _ in range(4):
        await call(channel)

    assert set(dialer.called()) == {"a", "c"}
    await asyncio.wait_for(dialer.channel("b").closed.wait(), 1.0)
    assert dialer.channel("b").close_grace == POLICY.timeout
    assert not dialer.channel("a").closed.is_set()
    assert [len(dialer.channels[name]) for name in "abc"] == [1, 1, 1]


async def test_an_endpoint_that_moves_gets_a_new_channel(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()
    moved = endpoint("a", port=50062)

    source.publish(moved)
    await eventually(lambda: channel.endpoints()[0].address == moved.address)

    old, new = dialer.channels["a"]
    await asyncio.wait_for(old.closed.wait(), 1.0)
    assert not new.closed.is_set()
    assert await call(channel) == "reply from a"
    assert new.endpoint == moved


async def test_an_endpoint_whose_metadata_changes_keeps_its_channel(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()
    tagged = Endpoint(SERVICE, "a", A.address, metadata={"metrics": "127.0.0.1:9"})

    source.publish(tagged)
    await eventually(lambda: channel.endpoints()[0].metadata == tagged.metadata)

    assert len(dialer.channels["a"]) == 1
    assert not dialer.channel("a").closed.is_set()


async def test_a_channel_in_transient_failure_is_skipped(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B, C)
    channel = await make()
    dialer.channel("b").state = grpc.ChannelConnectivity.TRANSIENT_FAILURE

    for _ in range(6):
        await call(channel)

    assert "b" not in dialer.called()
    assert set(dialer.called()) == {"a", "c"}


async def test_when_every_channel_is_failing_one_is_still_tried(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    for name in "ab":
        dialer.channel(name).state = grpc.ChannelConnectivity.TRANSIENT_FAILURE

    reply = await call(channel)

    assert reply in ("reply from a", "reply from b")
    assert len(dialer.calls) == 1


async def test_close_closes_every_channel(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()

    await channel.close()

    assert all(dialer.channel(name).closed.is_set() for name in "ab")
    assert channel.endpoints() == []


# -- breakers ------------------------------------------------------------------------------


async def test_an_endpoint_with_an_open_breaker_is_skipped(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B, C)
    channel = await make()
    open_breaker(channel, "b")

    for _ in range(6):
        await call(channel)

    assert set(dialer.called()) == {"a", "c"}


async def test_when_every_breaker_is_open_circuit_open_is_raised_without_calling(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    for name in "ab":
        open_breaker(channel, name)

    with pytest.raises(CircuitOpen) as caught:
        await call(channel)

    error = caught.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.service == SERVICE
    assert error.endpoint in (A.address, B.address)
    assert 0 < error.retry_after <= POLICY.breaker.reset_timeout
    assert dialer.calls == []


async def test_failed_calls_open_the_endpoints_breaker(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    for _ in range(THRESHOLD):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(channel, ADJUST_STOCK)
        await call(channel, ADJUST_STOCK)  # b, so the next one goes to a again
    for _ in range(4):
        await call(channel, ADJUST_STOCK)

    assert channel.breaker("a").state == "open"
    assert channel.breaker("b").state == "closed"
    assert dialer.called() == ["a", "b"] * THRESHOLD + ["b"] * 4


async def test_an_empty_endpoint_set_raises_no_endpoints(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish()
    channel = await make()

    with pytest.raises(NoEndpoints) as caught:
        await call(channel, timeout=0.5)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.service == SERVICE
    assert dialer.calls == []


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [GET_STOCK, RESERVE_STOCK])
async def test_unavailable_on_an_idempotent_method_is_retried_elsewhere(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    method: str,
) -> None:
    source.publish(A, B, C)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    reply = await call(channel, method)

    assert reply == "reply from b"
    assert dialer.called() == ["a", "b"]


@pytest.mark.parametrize("max_attempts", [1, 2, 3])
async def test_retries_stop_after_max_attempts(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    max_attempts: int,
) -> None:
    source.publish(A, B, C)
    policy = ClientPolicy(timeout=1.0, retry=RetryPolicy(max_attempts=max_attempts))
    channel = await make(policy)
    dialer.failures.update(dict.fromkeys("abc", grpc.StatusCode.UNAVAILABLE))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dialer.called() == ["a", "b", "c"][:max_attempts]


async def test_a_single_endpoint_is_retried_itself(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError):
        await call(channel)

    assert dialer.called() == ["a"] * POLICY.retry.max_attempts


async def test_a_non_idempotent_method_is_not_retried(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, ADJUST_STOCK)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dialer.called() == ["a"]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    ],
)
async def test_codes_other_than_unavailable_are_not_retried(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    code: grpc.StatusCode,
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = code

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel)

    assert caught.value.code() is code
    assert dialer.called() == ["a"]


async def test_retries_and_outcomes_are_counted(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    registry = CollectorRegistry()
    source.publish(A, B)
    channel = await make(metrics=ClientMetrics(registry))
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE
    labels = {"grpc_service": "shop.inventory.v1.InventoryService", "grpc_method": "GetStock"}

    await call(channel)

    assert registry.get_sample_value("shopmesh_client_retries_total", labels) == 1.0
    assert (
        registry.get_sample_value(
            "grpc_client_handled_total", {**labels, "grpc_type": "unary", "grpc_code": "OK"}
        )
        == 1.0
    )
    assert (
        registry.get_sample_value("grpc_client_started_total", {**labels, "grpc_type": "unary"})
        == 1.0
    )


async def test_an_opening_breaker_sets_the_gauge(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    registry = CollectorRegistry()
    source.publish(A)
    channel = await make(metrics=ClientMetrics(registry))

    open_breaker(channel, "a")

    value = registry.get_sample_value(
        "shopmesh_client_breaker_open", {"service": SERVICE, "endpoint": "a"}
    )
    assert value == 1.0


class ScriptedRandom(random.Random):
    """uniform() returns the given values in turn, so each jitter draw is chosen."""

    def __init__(self, values: Iterable[float]) -> None:
        super().__init__(0)
        self._values = iter(values)

    def uniform(self, a: float, b: float) -> float:
        return next(self._values)


async def test_a_retry_judged_to_fit_the_deadline_is_made(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    # Delays of 0.2 * (1 -/+ 0.5): the draws alternate between 0.1 s and 0.3 s.
    backoff = Backoff(
        initial=0.2, maximum=0.2, jitter=0.5, rng=ScriptedRandom(itertools.cycle([-1.0, 1.0]))
    )
    channel = await make(backoff=backoff)
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    reply = await call(channel, timeout=0.25)

    assert reply == "reply from b"


# -- deadlines -------------------------------------------------------------------------------


async def test_each_attempt_gets_what_is_left_of_the_callers_timeout(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B, C)
    backoff = Backoff(initial=0.01, maximum=0.01, jitter=0.0)
    channel = await make(backoff=backoff)
    dialer.failures.update(dict.fromkeys("abc", grpc.StatusCode.UNAVAILABLE))

    with pytest.raises(grpc.aio.AioRpcError):
        await call(channel, timeout=2.0)

    timeouts = [c.timeout for c in dialer.calls if c.timeout is not None]
    assert len(timeouts) == len(dialer.calls) == 3
    assert all(0 < t <= 2.0 for t in timeouts)
    assert timeouts[0] > timeouts[1] > timeouts[2]
    assert timeouts[0] - timeouts[2] >= 0.019  # two backoff sleeps of 0.01 s


async def test_without_a_timeout_the_policy_default_applies(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()

    await call(channel)

    (only,) = dialer.calls
    assert only.timeout is not None
    assert POLICY.timeout - 0.2 < only.timeout <= POLICY.timeout


@pytest.mark.parametrize("explicit", [None, 5.0])
async def test_an_inherited_deadline_bounds_every_attempt(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    explicit: float | None,
) -> None:
    source.publish(A)
    channel = await make()

    async def inbound_call() -> Any:
        inbound.enter(Within(0.2))
        return await call(channel, timeout=explicit)

    await in_own_context(inbound_call)

    (only,) = dialer.calls
    assert only.timeout is not None
    assert 0 < only.timeout <= 0.2


async def test_a_shorter_explicit_timeout_beats_the_inherited_deadline(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()

    async def inbound_call() -> Any:
        inbound.enter(Within(5.0))
        return await call(channel, timeout=0.1)

    await in_own_context(inbound_call)

    (only,) = dialer.calls
    assert only.timeout is not None
    assert 0 < only.timeout <= 0.1


@pytest.mark.parametrize("left", [0.0, -1.0])
async def test_a_passed_inherited_deadline_fails_without_calling(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    left: float,
) -> None:
    source.publish(A)
    channel = await make()

    async def inbound_call() -> Any:
        inbound.enter(Within(left))
        return await call(channel, timeout=1.0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await in_own_context(inbound_call)

    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert dialer.calls == []


# -- is_idempotent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (GET_STOCK, True),
        (GET_STOCK.lstrip("/"), True),
        (RESERVE_STOCK, True),
        (ADJUST_STOCK, False),
        ("/shop.inventory.v1.InventoryService/NoSuchMethod", False),
        ("/no.such.Service/GetStock", False),
    ],
    ids=[
        "no side effects",
        "no leading slash",
        "idempotent",
        "default",
        "unknown",
        "unknown service",
    ],
)
def test_is_idempotent_follows_the_proto(method: str, expected: bool) -> None:
    assert is_idempotent(method) is expected


async def test_a_trial_call_that_fails_in_this_process_gives_its_slot_back(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    now = [dt.datetime.now(dt.UTC)]
    policy = BreakerPolicy(failure_threshold=1, reset_timeout=10)
    source.publish(A)
    channel = await make(
        breaker_factory=lambda e: EndpointBreaker(e.instance_id, policy, clock=lambda: now[0])
    )
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError):
        await call(channel, ADJUST_STOCK)  # opens the breaker
    now[0] += dt.timedelta(seconds=11)
    dialer.crashes.add("a")
    with pytest.raises(RuntimeError):
        await call(channel, ADJUST_STOCK)  # the trial, lost to a local error
    dialer.crashes.clear()
    del dialer.failures["a"]
    assert await call(channel, ADJUST_STOCK) == "reply from a"  # a new trial is let through


# -- what a failure says: breakers hear only endpoint faults; one level retries ----------


def with_details(code: grpc.StatusCode, problem: Problem) -> grpc.aio.AioRpcError:
    """A failure as a mesh server sends it: with its google.rpc.Status in the trailers."""
    trailers = grpc.aio.Metadata(
        ("grpc-status-details-bin", problem.to_status().SerializeToString())
    )
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=problem.message)


def dependency_failed(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> grpc.aio.AioRpcError:
    return with_details(code, DependencyFailed(code, "product: no endpoint"))


@pytest.mark.parametrize(
    "failure",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        # What grpc raises for its own size limits (trailers or a message too large):
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        dependency_failed(),
    ],
    ids=lambda failure: getattr(failure, "name", "DependencyFailed"),
)
async def test_a_failure_the_request_or_a_dependency_caused_never_opens_the_breaker(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    failure: grpc.StatusCode | grpc.aio.AioRpcError,
) -> None:
    source.publish(A)
    channel = await make()
    dialer.failures["a"] = failure

    for _ in range(THRESHOLD * 3):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(channel, ADJUST_STOCK)

    assert channel.breaker("a").state == "closed"
    assert channel.breaker("a").failures == 0


async def test_resource_exhausted_that_the_server_declares_opens_the_breaker(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()
    declared = with_details(grpc.StatusCode.RESOURCE_EXHAUSTED, Unavailable("overloaded"))
    dialer.failures["a"] = declared

    for _ in range(THRESHOLD):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(channel, ADJUST_STOCK)

    assert channel.breaker("a").state == "open"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_dependency_failure_is_not_retried(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    code: grpc.StatusCode,
) -> None:
    source.publish(A, B)
    policy = replace(POLICY, retry=RetryPolicy(max_attempts=3, per_try_timeout=0.5))
    channel = await make(policy)
    dialer.failures.update(a=dependency_failed(code), b=dependency_failed(code))

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(channel, GET_STOCK, timeout=5.0)

    assert error.value.code() is code
    assert len(dialer.calls) == 1


async def test_a_hung_endpoint_costs_an_idempotent_call_the_per_try_timeout(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    policy = replace(POLICY, retry=RetryPolicy(max_attempts=3, per_try_timeout=0.1))
    channel = await make(policy)
    dialer.hung.add("a")

    started = time.monotonic()
    reply = await call(channel, GET_STOCK, timeout=5.0)

    assert reply == "reply from b"
    assert time.monotonic() - started < 1.0
    assert [(c.instance_id, c.timeout) for c in dialer.calls] == [("a", 0.1), ("b", 0.1)]
    assert channel.breaker("a").failures == 1  # it had its fair chance


async def test_a_non_idempotent_call_waits_out_a_hung_endpoint(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    policy = replace(POLICY, retry=RetryPolicy(max_attempts=3, per_try_timeout=0.1))
    channel = await make(policy)
    dialer.hung.add("a")

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(channel, ADJUST_STOCK, timeout=0.3)  # it may have been applied

    assert error.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert dialer.called() == ["a"]
    timeout = dialer.calls[0].timeout
    assert timeout is not None
    assert timeout > 0.2


async def test_a_deadline_the_caller_cut_short_does_not_count_against_the_endpoint(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    policy = replace(POLICY, retry=RetryPolicy(max_attempts=1, per_try_timeout=0.5))
    channel = await make(policy)
    dialer.hung.add("a")

    for _ in range(THRESHOLD * 2):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(channel, ADJUST_STOCK, timeout=0.01)  # a caller in a hurry

    assert channel.breaker("a").state == "closed"


# -- every call shape ---------------------------------------------------------------


async def requests(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_stubs_of_every_shape_take_the_channel(
    source: FakeSource, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    """Generated stubs create one callable per method in their constructor: a stub
    with a client- or bidirectional-streaming method needs those shapes too."""
    channel = await make()

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # one stream-stream method

    assert callable(stub.ServerReflectionInfo)


@pytest.mark.parametrize("shape", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
async def test_every_shape_goes_round_robin_with_the_callers_deadline(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    shape: str,
) -> None:
    source.publish(A, B)
    channel = await make()
    method = {"unary_unary": shapes.GET, "unary_stream": shapes.WATCH}.get(shape, shapes.UPLOAD)
    if shape == "stream_stream":
        method = shapes.CHAT

    for _ in range(4):
        await run_shape(channel, shape, method, timeout=2.0)

    assert dialer.called() == ["a", "b", "a", "b"]
    assert all(c.timeout is not None and 1.5 < c.timeout <= 2.0 for c in dialer.calls)


async def run_shape(channel: ServiceChannel, shape: str, method: str, **kwargs: Any) -> Any:
    """One call of `shape`, its answer (a list for response streams)."""
    factory = getattr(channel, shape)(
        method, request_serializer=serialize, response_deserializer=deserialize
    )
    if shape == "unary_unary":
        return await factory("request", **kwargs)
    if shape == "unary_stream":
        return [item async for item in factory("request", **kwargs)]
    if shape == "stream_unary":
        return await factory(requests("x", "y"), **kwargs)
    return [item async for item in factory(requests("x", "y"), **kwargs)]


async def test_client_and_bidi_streams_carry_their_requests(
    source: FakeSource, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A)
    channel = await make()

    assert await run_shape(channel, "stream_unary", shapes.UPLOAD) == "a read x+y"
    assert await run_shape(channel, "stream_stream", shapes.CHAT) == ["a echoes x", "a echoes y"]


async def test_a_server_stream_that_fails_before_its_first_message_is_retried(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    received = await run_shape(channel, "unary_stream", shapes.WATCH)

    assert received == ["b:0", "b:1", "b:2"]
    assert dialer.called() == ["a", "b"]
    assert channel.breaker("a").failures == 1


async def test_a_server_stream_that_fails_after_a_message_is_not_retried(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE
    dialer.breaks_midway.add("a")
    stream = channel.unary_stream(
        shapes.WATCH, request_serializer=serialize, response_deserializer=deserialize
    )
    received: list[str] = []

    async def drain() -> None:
        async for item in stream("request"):
            received.append(item)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await drain()

    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert received == ["a:0"]  # the caller saw part of the stream: no second one
    assert dialer.called() == ["a"]


@pytest.mark.parametrize("shape", ["stream_unary", "stream_stream"])
async def test_a_request_stream_is_never_retried(
    source: FakeSource,
    dialer: Dialer,
    make: Callable[..., Awaitable[ServiceChannel]],
    shape: str,
) -> None:
    source.publish(A, B)
    channel = await make()
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await run_shape(channel, shape, shapes.UPLOAD if shape == "stream_unary" else shapes.CHAT)

    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dialer.called() == ["a"]  # consumed as it was sent: it cannot be sent again
    assert channel.breaker("a").failures == 1


# -- retries: the deadline, and never straight back to the failed endpoint --------------


async def test_a_retry_whose_backoff_would_outlast_the_deadline_is_not_made(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    source.publish(A, B)
    channel = await make(backoff=Backoff(initial=0.5, maximum=0.5, jitter=0.0))
    dialer.failures["a"] = grpc.StatusCode.UNAVAILABLE

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(channel, GET_STOCK, timeout=0.2)

    assert error.value.code() is grpc.StatusCode.UNAVAILABLE  # the real error, at once
    assert time.monotonic() - started < 0.1
    assert dialer.called() == ["a"]


async def test_a_retry_never_goes_straight_back_to_the_endpoint_that_failed(
    source: FakeSource, dialer: Dialer, make: Callable[..., Awaitable[ServiceChannel]]
) -> None:
    """Every endpoint fails, and concurrent calls keep moving the round-robin cursor:
    once a call has tried them all, it starts over, but not where it just failed."""
    source.publish(A, B)
    policy = replace(
        POLICY,
        retry=RetryPolicy(max_attempts=5, per_try_timeout=60.0),
        breaker=BreakerPolicy(failure_threshold=1000, reset_timeout=60.0),  # out of the way
    )
    channel = await make(policy, backoff=Backoff(initial=0.001, maximum=0.003, jitter=0.9))
    dialer.failures.update(a=grpc.StatusCode.UNAVAILABLE, b=grpc.StatusCode.UNAVAILABLE)
    rpc = channel.unary_unary(
        GET_STOCK, request_serializer=serialize, response_deserializer=deserialize
    )

    await asyncio.gather(
        *(rpc(f"call-{n}", timeout=5.0) for n in range(10)), return_exceptions=True
    )

    by_call: dict[str, list[str]] = {}
    for made in dialer.calls:
        by_call.setdefault(made.request, []).append(made.instance_id)
    assert len(by_call) == 10
    for sequence in by_call.values():
        assert all(first != second for first, second in itertools.pairwise(sequence)), sequence
