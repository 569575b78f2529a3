"""The deadline of the inbound call being served, so outbound calls can inherit it.

The server interceptor records the absolute deadline (time.monotonic() based) in a
context variable; the mesh client turns it back into a timeout for each downstream
call, so a chain of calls never outlives the first caller's deadline.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

__all__ = ["inherit", "remaining"]

_deadline: ContextVar[float | None] = ContextVar("shopmesh_deadline", default=None)


def inherit(time_remaining: float | None) -> Token[float | None]:
    """Record that the current call must finish within `time_remaining` seconds."""
    return _deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def remaining() -> float | None:
    """Seconds left before the inherited deadline, or None if there is none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
