"""cancel_and_wait ends a task even when a cancellation is lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mesh.tasks import cancel_and_wait, start_background


async def test_a_task_that_swallows_one_cancellation_is_still_ended() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as asyncio.wait_for can, in a race, in Python 3.11

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.01), 2)
    assert task.cancelled()
    assert swallowed == 1


async def test_the_error_a_task_had_ended_with_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="broken")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="mesh.tasks"):
        await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [task.exception()]


async def test_a_background_task_that_dies_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise OverflowError("as a float can")

    with caplog.at_level(logging.ERROR, logger="mesh.tasks"):
        task = start_background(broken(), "doomed")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert any(isinstance(r.exc_info[1], OverflowError) for r in caplog.records if r.exc_info)
