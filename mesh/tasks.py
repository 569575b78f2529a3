"""Ending tasks for sure."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `every` s while
    it runs on. NOTE: a cancellation can be lost (in Python 3.11, asyncio.wait_for
    swallows one that arrives just as its awaitable completes), and a task that then
    runs on forever would hang whoever waits for it."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: an error it ended with is not worth a warning now
