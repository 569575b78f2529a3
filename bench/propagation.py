"""How long a registry change takes to reach the sidecars: from an etcd put (or delete)
of an endpoint returning to the moment every sidecar's admin `/clusters` lists it (or
no longer does).

The endpoints are fake (an address nobody serves) of a service whose version is
declared, so each change is an EDS update only (a new version would be a CDS update
too); nobody calls them, so Envoy never dials them. After each change every sidecar's
admin is polled, all at once, about once a millisecond, over one kept-alive HTTP/1.1
connection each (a new connection per poll would cost more than the poll).

The pure parts (`shows_host`, `ChangeTiming`, `propagation_json`) are unit-tested.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

from bench.summary import PropagationJson
from mesh.registry import Endpoint, EtcdClient, instance_key

__all__ = [
    "MAX_GOAL_MS",
    "MEDIAN_GOAL_MS",
    "AdminConnection",
    "AdminError",
    "ChangeTiming",
    "fake_endpoint",
    "measure_changes",
    "propagation_json",
    "read_response",
    "shows_host",
    "until_shown",
]

MEDIAN_GOAL_MS = 50.0
MAX_GOAL_MS = 200.0
POLL_INTERVAL = 0.001  # seconds between two polls of one admin
CHANGE_TIMEOUT = 5.0  # seconds a change gets to show everywhere; then it counts as missed
SETTLE = 0.05  # seconds between changes, so Envoys' ACKs of the last one are in
_FAKE_PORT_BASE = 20000
_MAX_HEAD = 16 * 1024

Tick = Callable[[str], None]


class AdminError(Exception):
    """An Envoy admin answered with something other than 200, or not as HTTP/1.1."""


class AdminConnection:
    """One kept-alive HTTP/1.1 connection to an Envoy admin ("host:port"), for GETs."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> AdminConnection:
        host, _, port = self.address.rpartition(":")
        self._reader, self._writer = await asyncio.open_connection(host, int(port))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def get(self, path: str) -> str:
        """The body of `GET path`; raises AdminError unless it answers 200."""
        assert self._reader is not None, "not connected"
        assert self._writer is not None, "not connected"
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.address}\r\n\r\n".encode())
        await self._writer.drain()
        return await read_response(self._reader)


async def read_response(reader: asyncio.StreamReader) -> str:
    """One HTTP/1.1 response's body (Content-Length or chunked); AdminError unless 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise AdminError("response head too long")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise AdminError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    if parts[1] != "200":
        raise AdminError(f"admin answered {parts[1]}: {body[:80]!r}")
    return body.decode(errors="replace")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # the end of the (empty) trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after each chunk


def shows_host(clusters: str, cluster: str, address: str) -> bool:
    """Whether admin `/clusters` text lists host `address` ("host:port") in `cluster`:
    each host has lines `<cluster>::<host:port>::<stat>::<value>`."""
    return f"\n{cluster}::{address}::" in f"\n{clusters}"


def fake_endpoint(service: str, version: str, index: int) -> Endpoint:
    """An endpoint of `service` at an address no one serves (nobody calls it)."""
    return Endpoint(
        service=service,
        instance_id=f"{service}-bench-{index}",
        address=f"127.0.0.1:{_FAKE_PORT_BASE + index}",
        version=version,
    )


async def until_shown(
    admin: AdminConnection, cluster: str, address: str, *, present: bool, since: float
) -> float | None:
    """Seconds from `since` (monotonic) to the first poll of `admin` whose /clusters
    lists `address` in `cluster` (or, `present` False, no longer does); None if that
    takes over CHANGE_TIMEOUT."""
    while True:
        text = await admin.get("/clusters")
        now = time.monotonic()
        if shows_host(text, cluster, address) is present:
            return now - since
        if now - since > CHANGE_TIMEOUT:
            return None
        await asyncio.sleep(POLL_INTERVAL)


@dataclass(frozen=True)
class ChangeTiming:
    """One registry change and, per sidecar, the seconds until its /clusters showed it
    (None: not within CHANGE_TIMEOUT)."""

    action: str  # "register" or "deregister"
    seen_after: tuple[float | None, ...]

    @property
    def everywhere(self) -> float | None:
        """Seconds until the last sidecar showed it; None if one never did."""
        if any(s is None for s in self.seen_after):
            return None
        return max((s for s in self.seen_after if s is not None), default=None)

    @property
    def first(self) -> float | None:
        """Seconds until the first sidecar showed it."""
        return min((s for s in self.seen_after if s is not None), default=None)


async def measure_changes(
    etcd: EtcdClient,
    prefix: str,
    admins: Sequence[str],
    *,
    changes: int,
    cluster: str,
    service: str,
    version: str,
    tick: Tick,
) -> list[ChangeTiming]:
    """`changes` registry changes, alternately registering a fake endpoint of `service`
    (at `version`, whose sidecar cluster is `cluster`) and deleting it again, each timed
    until every admin in `admins` shows it. The registry is as before at the end when
    `changes` is even."""
    timings: list[ChangeTiming] = []
    async with AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(AdminConnection(a)) for a in admins]
        for number in range(changes):
            endpoint = fake_endpoint(service, version, number // 2)
            key = instance_key(prefix, service, endpoint.instance_id)
            register = number % 2 == 0
            tick(f"change {number + 1}/{changes}")
            if register:
                await etcd.put(key, endpoint.to_json())
            else:
                await etcd.delete(key)
            since = time.monotonic()  # the put/delete has returned
            seen = await asyncio.gather(
                *(
                    until_shown(c, cluster, endpoint.address, present=register, since=since)
                    for c in connections
                )
            )
            timings.append(ChangeTiming("register" if register else "deregister", tuple(seen)))
            await asyncio.sleep(SETTLE)
    tick("")
    return timings


def _ms(seconds: float | None) -> float:
    return math.nan if seconds is None else 1000.0 * seconds


def propagation_json(
    timings: Sequence[ChangeTiming],
    sidecars: Sequence[str],
    cpu_ms_per_change: Mapping[str, float],
) -> PropagationJson:
    """Median and max over the changes of the time until every sidecar showed each; a
    change some sidecar never showed counts as infinitely late (so the max is then inf
    and fails its goal, and so does the median if half the changes were missed).
    `cpu_ms_per_change`: CPU milliseconds per change of each process group, over the
    whole measurement (what it costs, and who might have been short of a core)."""
    everywhere = [math.inf if t.everywhere is None else 1000.0 * t.everywhere for t in timings]
    first = [_ms(t.first) for t in timings]
    median = statistics.median(everywhere) if everywhere else math.nan
    worst = max(everywhere, default=math.nan)
    return {
        "sidecars": list(sidecars),
        "changes": len(timings),
        "actions": [t.action for t in timings],
        "everywhere_ms": everywhere,
        "first_sidecar_ms": first,
        "per_sidecar_ms": [[_ms(s) for s in t.seen_after] for t in timings],
        "missed": sum(1 for t in timings if t.everywhere is None),
        "median_ms": median,
        "max_ms": worst,
        "first_sidecar_median_ms": statistics.median(first) if first else math.nan,
        "cpu_ms_per_change": dict(cpu_ms_per_change),
        "median_goal_ms": MEDIAN_GOAL_MS,
        "max_goal_ms": MAX_GOAL_MS,
        "met": bool(timings) and median <= MEDIAN_GOAL_MS and worst <= MAX_GOAL_MS,
    }
