"""The deadline of the inbound call being served, so outbound calls can inherit it.

The server interceptor records the call being served in a context variable; the mesh
client asks it for the time left only when it makes a downstream call, so a chain of
calls never outlives the first caller's deadline, and a service that calls nothing
downstream pays nothing for it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from typing import Protocol

__all__ = ["Deadline", "inherit", "inherit_from", "remaining"]


class Deadline(Protocol):
    """Anything that knows its time left, such as a grpc ServicerContext."""

    def time_remaining(self) -> float | None: ...


class _Fixed:
    __slots__ = ("_at",)

    def __init__(self, seconds: float | None) -> None:
        self._at = None if seconds is None else time.monotonic() + seconds

    def time_remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()


_current: ContextVar[Deadline | None] = ContextVar("shopmesh_deadline", default=None)


def inherit_from(call: Deadline) -> Token[Deadline | None]:
    """Calls made from here on get at most what `call` has left."""
    return _current.set(call)


def inherit(time_remaining: float | None) -> Token[Deadline | None]:
    """Calls made from here on must finish within `time_remaining` seconds from now."""
    return _current.set(_Fixed(time_remaining))


def remaining() -> float | None:
    """Seconds left before the inherited deadline, or None if there is none."""
    call = _current.get()
    return None if call is None else call.time_remaining()
