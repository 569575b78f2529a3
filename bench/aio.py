"""Cleanup that a Ctrl-C cannot cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["to_completion"]

_T = TypeVar("_T")


async def to_completion(awaitable: Awaitable[_T]) -> _T:
    """Await `awaitable` to its end even if this task is cancelled meanwhile (asyncio.run
    cancels the main task on Ctrl-C), then re-raise the cancellation. For `finally`
    blocks that stop processes: without it the first await of a cleanup is cancelled
    and the process it was stopping is left behind."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
