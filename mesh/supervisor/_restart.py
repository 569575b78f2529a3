"""When to restart a process that died: as Kubernetes restarts a crashed container, after a
delay that doubles with each crash in a row, reset once the process has stayed up.

Plain state over an injected clock, so that the timing is tested without processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mesh.backoff import Backoff

__all__ = ["CRASHLOOP", "RESTARTING", "CrashTracker", "RestartPolicy"]

RESTARTING = "RESTARTING"
"""Health of an instance waiting to be restarted after a crash."""
CRASHLOOP = "CRASHLOOP"
"""Health of an instance waiting to be restarted after crashing again without having
stayed up (Kubernetes' CrashLoopBackOff)."""


@dataclass(frozen=True)
class RestartPolicy:
    """Delays before restarts: `initial` s after a first crash, doubling for each crash in
    a row up to `maximum` s; a process that was ready (SERVING, or etcd healthy) for
    `stable_after` s starts the count again. Kubernetes uses 10 s, 5 min and 10 min; a
    local mesh restarts sooner. No jitter: one supervisor restarts a handful of processes."""

    initial: float = 1.0
    maximum: float = 30.0
    stable_after: float = 10.0

    def delay(self, crashes: int) -> float:
        """The delay before restarting after `crashes` crashes in a row (1 or more)."""
        return Backoff(self.initial, self.maximum, jitter=0.0).delay(crashes - 1)


class CrashTracker:
    """Counts one process's crashes in a row and says how long to wait after each."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._ready_since: float | None = None
        self.crashes = 0  # in a row, without a stable run between them

    def ready(self) -> None:
        """The process (just started) has become ready."""
        self._ready_since = self._clock()

    def crashed(self) -> float:
        """The process died unasked; returns the delay before starting it again."""
        if self._ready_since is not None:
            if self._clock() - self._ready_since >= self._policy.stable_after:
                self.crashes = 0
            self._ready_since = None
        self.crashes += 1
        return self._policy.delay(self.crashes)

    @property
    def waiting_state(self) -> str:
        """What to show while waiting out the delay: CRASHLOOP after repeated crashes."""
        return CRASHLOOP if self.crashes > 1 else RESTARTING
