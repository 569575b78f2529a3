"""The inbound call record: its deadline and its trace ids, as calls made while serving
it inherit them."""

from __future__ import annotations

import asyncio
import contextvars

from mesh import inbound


class Left:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def time_remaining(self) -> float | None:
        return self.seconds


def test_outside_a_call_there_is_nothing_to_inherit() -> None:
    def run() -> tuple[inbound.TraceIds | None, float | None]:
        return inbound.trace_ids(), inbound.remaining()

    assert contextvars.Context().run(run) == (None, None)


def test_a_call_hands_on_its_time_left_as_it_is_asked() -> None:
    left = Left(3.0)

    def run() -> list[float | None]:
        inbound.enter(left)
        seen = [inbound.remaining()]
        left.seconds = 1.5  # read when asked, not when entered
        seen.append(inbound.remaining())
        return seen

    assert contextvars.Context().run(run) == [3.0, 1.5]


def test_the_callers_trace_ids_are_kept() -> None:
    def run() -> inbound.TraceIds:
        inbound.enter(Left(None), (7, 9))
        return inbound.trace_ids()

    assert contextvars.Context().run(run) == (7, 9)


async def test_drawn_ids_are_drawn_once_and_shared_with_tasks_the_handler_started() -> None:
    async def handler() -> set[inbound.TraceIds]:
        inbound.enter(Left(None))
        started_before = asyncio.create_task(ids_in_task())
        await asyncio.sleep(0)
        mine = ids()
        return {mine, await started_before, await asyncio.create_task(ids_in_task())}

    async def ids_in_task() -> inbound.TraceIds:
        return ids()

    def ids() -> inbound.TraceIds:
        found = inbound.trace_ids()
        assert found is not None
        return found

    seen = await asyncio.create_task(handler(), context=contextvars.Context())
    assert len(seen) == 1
    trace_id, span_id = seen.pop()
    assert 0 < trace_id < 2**128
    assert 0 < span_id < 2**64


def test_two_calls_get_different_ids() -> None:
    def run() -> inbound.TraceIds | None:
        inbound.enter(Left(None))
        return inbound.trace_ids()

    assert len({contextvars.Context().run(run) for _ in range(20)}) == 20
