"""Background tasks that are started, watched and ended for sure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["cancel_and_wait", "start_background"]

log = logging.getLogger("mesh.tasks")


def start_background(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start `work`, meant to run until cancelled; if it ends with an error, that is
    logged at once rather than lost until (or unless) someone awaits the task."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %r stopped", task.get_name(), exc_info=task.exception())


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `every` s while
    it runs on. NOTE: a cancellation can be lost (in Python 3.11, asyncio.wait_for
    swallows one that arrives just as its awaitable completes), and a task that then
    runs on forever would hang whoever waits for it."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %r had ended with an error", task.get_name(), exc_info=task.exception())
