"""ServiceChannel's version weights and retry budget, over the fake source and dialer of
test_channel: a version picked per call by smooth weighted round-robin, round-robin
within it, fallback to the other weighted versions, and retries within the budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import grpc
import pytest

from mesh.client import RetryBudgetMeter, ServiceChannel
from mesh.config import BreakerPolicy, RetryBudget, RetryPolicy
from mesh.errors import CircuitOpen, NoEndpoints
from mesh.registry import Endpoint
from tests.unit.mesh.test_channel import (
    GET_STOCK,
    POLICY,
    SERVICE,
    TINY,
    Dialer,
    FakeSource,
    call,
    eventually,
    open_breaker,
)

Opener = Callable[..., Awaitable[ServiceChannel]]


def endpoint(name: str, version: str) -> Endpoint:
    return Endpoint(SERVICE, name, f"10.0.{ord(name[0])}.{name[1]}:50061", version=version)


# a1 and a2 run v1, b1 and b2 run v2, c1 runs v3.
A1, A2, B1, B2, C1 = (
    endpoint("a1", "v1"),
    endpoint("a2", "v1"),
    endpoint("b1", "v2"),
    endpoint("b2", "v2"),
    endpoint("c1", "v3"),
)


class Weights:
    """A weights provider the test changes as `meshctl traffic` would."""

    def __init__(self, **weights: int) -> None:
        self.current: Mapping[str, int] = weights

    def __call__(self) -> Mapping[str, int]:
        return self.current


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def dialer() -> Dialer:
    return Dialer()


@pytest.fixture
async def make(source: FakeSource, dialer: Dialer) -> AsyncIterator[Opener]:
    opened: list[ServiceChannel] = []

    async def open_channel(**kwargs: Any) -> ServiceChannel:
        kwargs.setdefault("backoff", TINY)
        channel = ServiceChannel(SERVICE, source, dialer, kwargs.pop("policy", POLICY), **kwargs)
        opened.append(channel)
        await channel.wait_for_endpoints(1.0)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()


async def versions_called(channel: ServiceChannel, dialer: Dialer, calls: int) -> Counter[str]:
    dialer.calls.clear()
    for _ in range(calls):
        await call(channel)
    return Counter(instance_id[0] for instance_id in dialer.called())


# -- weighted picks ---------------------------------------------------------------------------


async def test_ninety_ten_sends_exactly_ten_of_a_hundred_calls_to_v2(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, A2, B1)
    channel = await make(weights=Weights(v1=90, v2=10))

    shares = await versions_called(channel, dialer, 100)

    assert shares == {"a": 90, "b": 10}
    # Round-robin within v1: its two endpoints share its calls.
    assert Counter(dialer.called()) == {"a1": 45, "a2": 45, "b1": 10}


@pytest.mark.parametrize(("v1", "v2", "expected"), [(0, 100, {"b": 20}), (100, 0, {"a": 20})])
async def test_a_version_of_weight_zero_gets_nothing(
    source: FakeSource,
    dialer: Dialer,
    make: Opener,
    v1: int,
    v2: int,
    expected: dict[str, int],
) -> None:
    source.publish(A1, A2, B1, B2)
    channel = await make(weights=Weights(v1=v1, v2=v2))

    assert await versions_called(channel, dialer, 20) == expected


async def test_a_version_the_split_leaves_out_gets_nothing(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1, C1)
    channel = await make(weights=Weights(v1=1, v2=1))

    assert await versions_called(channel, dialer, 10) == {"a": 5, "b": 5}


async def test_without_a_split_every_endpoint_gets_an_equal_share(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, A2, B1, C1)
    channel = await make(weights=Weights())

    await versions_called(channel, dialer, 8)

    assert dialer.called() == ["a1", "a2", "b1", "c1"] * 2


async def test_a_changed_split_applies_from_the_next_call(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1)
    weights = Weights(v1=100)
    channel = await make(weights=weights)
    assert await versions_called(channel, dialer, 4) == {"a": 4}

    weights.current = {"v1": 50, "v2": 50}
    assert await versions_called(channel, dialer, 4) == {"a": 2, "b": 2}

    weights.current = {}  # the split was removed: every endpoint alike again
    source.publish(A1, A2, B1)
    await eventually(lambda: len(channel.endpoints()) == 3)
    assert await versions_called(channel, dialer, 6) == {"a": 4, "b": 2}


async def test_a_version_that_registers_later_gets_its_share(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1)
    channel = await make(weights=Weights(v1=50, v2=50))
    assert await versions_called(channel, dialer, 4) == {"a": 4}  # v2's share falls back

    source.publish(A1, B1)
    await eventually(lambda: len(channel.endpoints()) == 2)

    assert await versions_called(channel, dialer, 10) == {"a": 5, "b": 5}


# -- fallback ----------------------------------------------------------------------------------


async def test_a_version_without_usable_endpoints_falls_back_to_the_others(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1, B2, C1)
    channel = await make(weights=Weights(v1=10, v2=80, v3=10))
    dialer.channel("b1").state = grpc.ChannelConnectivity.TRANSIENT_FAILURE
    open_breaker(channel, "b2")

    shares = await versions_called(channel, dialer, 100)

    # v2's 80 calls go to the other weighted versions (the heaviest first: a tie, by name).
    assert shares == {"a": 90, "c": 10}


async def test_weight_zero_versions_are_no_fallback(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1)
    channel = await make(weights=Weights(v1=0, v2=100))
    open_breaker(channel, "b1")

    with pytest.raises(CircuitOpen):
        await call(channel)

    assert dialer.calls == []


async def test_weights_naming_only_unregistered_versions_find_no_endpoint(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1)
    channel = await make(weights=Weights(v2=100))

    with pytest.raises(NoEndpoints):
        await call(channel, timeout=0.05)

    assert dialer.calls == []


async def test_a_retry_stays_in_the_calls_version_while_it_has_another_endpoint(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1, B2)
    channel = await make(weights=Weights(v1=1, v2=1))
    dialer.failures["b1"] = grpc.StatusCode.UNAVAILABLE
    await call(channel)  # v2's turn comes second: the first call goes to v1
    dialer.calls.clear()

    reply = await call(channel)

    assert reply == "reply from b2"
    assert dialer.called() == ["b1", "b2"]


async def test_a_retry_leaves_a_version_whose_endpoints_have_all_failed(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, B1)
    channel = await make(weights=Weights(v1=1, v2=1))
    dialer.failures["b1"] = grpc.StatusCode.UNAVAILABLE
    await call(channel)
    dialer.calls.clear()

    reply = await call(channel)

    assert reply == "reply from a1"
    assert dialer.called() == ["b1", "a1"]


# -- retry budget ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(clock: FakeClock, percent: float, floor: int = 0) -> RetryBudgetMeter:
    return RetryBudgetMeter(RetryBudget(percent=percent, min_retries_per_second=floor), clock=clock)


async def test_a_retry_the_budget_refuses_ends_the_call_with_its_error(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1, A2)
    channel = await make(retry_budget=budget(FakeClock(), percent=0.0))
    dialer.failures["a1"] = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dialer.called() == ["a1"]


TWO_ATTEMPTS = replace(
    POLICY,
    retry=RetryPolicy(max_attempts=2, per_try_timeout=60.0),
    breaker=BreakerPolicy(failure_threshold=1000, reset_timeout=60.0),  # out of the way
)


async def attempts_of(channel: ServiceChannel, dialer: Dialer) -> int:
    """How many attempts one call made (it fails: every endpoint fails)."""
    dialer.calls.clear()
    with pytest.raises(grpc.aio.AioRpcError):
        await call(channel)
    return len(dialer.calls)


async def test_retries_stop_when_their_share_of_the_calls_is_spent(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1)
    channel = await make(policy=TWO_ATTEMPTS, retry_budget=budget(FakeClock(), percent=20.0))
    for _ in range(10):
        await call(channel)
    dialer.failures["a1"] = grpc.StatusCode.UNAVAILABLE

    # 10 calls, then 1, 2, 3 more: 20% of them is 2.2, 2.4, 2.6 retries.
    assert [await attempts_of(channel, dialer) for _ in range(3)] == [2, 2, 1]


async def test_the_budget_comes_back_when_its_ten_seconds_have_passed(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1)
    clock = FakeClock()
    channel = await make(policy=TWO_ATTEMPTS, retry_budget=budget(clock, percent=0.0, floor=1))
    dialer.failures["a1"] = grpc.StatusCode.UNAVAILABLE

    # The floor alone: 1 retry a second, 10 over the window.
    assert [await attempts_of(channel, dialer) for _ in range(12)] == [2] * 10 + [1, 1]
    clock.now += 9.0
    assert await attempts_of(channel, dialer) == 1
    clock.now += 1.0
    assert await attempts_of(channel, dialer) == 2


async def test_every_shape_of_call_counts_for_the_budget(
    source: FakeSource, dialer: Dialer, make: Opener
) -> None:
    source.publish(A1)
    meter = budget(FakeClock(), percent=100.0)
    channel = await make(retry_budget=meter)

    await call(channel, GET_STOCK)
    stream = channel.unary_stream(GET_STOCK)
    assert [item async for item in stream("request")] == ["a1:0", "a1:1", "a1:2"]

    assert [meter.allow_retry() for _ in range(3)] == [True, True, False]
