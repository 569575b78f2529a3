"""A helper process of the benchmark's, spawned, and the pipe the driver talks to it on.

The shop part's consumer and writer (bench.relay_consumer, bench.relay_writer) are
"spawn" processes, so they share nothing with the driver and start on the cores of
the driver's thread that starts them. Each answers orders on its pipe with
(kind, value) messages: ("ready", None) once it is set up, an answer per order, and
("failed", traceback) if it fails. `ChildProcess` starts one, asks it, and ends it
(asked to, then terminated) however the driver leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

__all__ = ["ChildFailed", "ChildProcess"]


class ChildFailed(Exception):
    """A helper process could not start, or did not answer as it should."""


class ChildProcess:
    """`target(*args, conn)` in a spawned process; `start()` waits for its "ready"."""

    def __init__(self, name: str, target: Callable[..., None], args: Sequence[object]) -> None:
        self.name = name
        self._target = target
        self._args = tuple(args)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        assert self._process.pid is not None, "not started"
        return self._process.pid

    async def start(self, timeout: float) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=self._target, args=(*self._args, child), name=self.name, daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        try:
            await asyncio.to_thread(self._receive, "ready", timeout)
        except BaseException:
            self.end(asked=False)
            raise

    async def ask(self, order: object, kind: str, timeout: float) -> object:
        """Send `order`; the value of the answer of `kind` within `timeout` s."""
        return await asyncio.to_thread(self._ask, order, kind, timeout)

    def _ask(self, order: object, kind: str, timeout: float) -> object:
        assert self._conn is not None, "not started"
        self._conn.send(order)
        return self._receive(kind, timeout)

    def _receive(self, kind: str, timeout: float) -> object:
        assert self._conn is not None, "not started"
        if not self._conn.poll(timeout):
            raise ChildFailed(f"no {kind} from the {self.name} within {timeout:.0f}s")
        try:
            got, value = self._conn.recv()
        except EOFError:
            raise ChildFailed(f"the {self.name} exited before sending {kind}") from None
        if got == "failed":
            raise ChildFailed(f"the {self.name} failed:\n{value}")
        if got != kind:
            raise ChildFailed(f"the {self.name} sent {got} instead of {kind}")
        return value

    def end(self, *, asked: bool) -> None:
        """Ask it to exit (`asked`: after a clean run) and wait a little, else (or then)
        terminate it, and kill it if it still lives."""
        if self._conn is not None and asked:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._process is not None:
            if asked:
                self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        if self._conn is not None:
            self._conn.close()
