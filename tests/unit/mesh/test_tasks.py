"""cancel_and_wait ends a task even when a cancellation is lost."""

from __future__ import annotations

import asyncio

from mesh.tasks import cancel_and_wait


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


async def test_a_task_that_failed_is_ended_quietly() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)
