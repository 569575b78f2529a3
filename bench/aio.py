"""Cleanup that a Ctrl-C cannot cut short, and the benchmark servers' lifetime."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

import grpc

__all__ = ["serve_until_signalled", "to_completion"]

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


async def serve_until_signalled(server: grpc.aio.Server, port: int) -> None:
    """Start `server`, print `port` (the driver waits for that line), and serve until
    SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(port, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(0)
