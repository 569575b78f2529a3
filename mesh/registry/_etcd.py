"""A small asyncio etcd v3 client on aetcd's generated stubs.

NOTE: aetcd.Client's watcher ends every watch on any stream error and its
refresh_lease opens a new stream per beat. The registry needs one long-lived
keepalive stream per lease and watches it can resume from a revision, so this
module drives the KV, Lease and Watch stubs directly and turns every gRPC failure
into RegistryUnavailable at this one boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
from aetcd import rpc

from mesh.errors import RegistryUnavailable, RevisionCompacted

__all__ = ["Change", "EtcdClient"]

_CHANNEL_OPTIONS = [
    # Notice a dead etcd on an idle connection; etcd refuses pings more often than 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


@dataclass(frozen=True)
class Change:
    """One watch event: a put (value set) or a delete (value None) of `key`."""

    key: str
    value: bytes | None


def _range_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


class EtcdClient:
    """Connects lazily to one etcd endpoint ("host:port") and reconnects by itself."""

    def __init__(self, endpoint: str, *, timeout: float = 3.0) -> None:
        self.endpoint = endpoint.removeprefix("http://")
        self._timeout = timeout
        self._channel = grpc.aio.insecure_channel(self.endpoint, options=_CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """The one place where a failed etcd call becomes RegistryUnavailable."""
        try:
            yield
        except grpc.aio.AioRpcError as error:
            raise RegistryUnavailable(
                f"etcd at {self.endpoint}: {error.code().name}: {error.details()}"
            ) from error

    async def get_prefix(self, prefix: str) -> tuple[int, list[tuple[str, bytes]]]:
        """The store revision and every (key, value) under `prefix`, in key order."""
        key = prefix.encode()
        request = rpc.RangeRequest(key=key, range_end=_range_end(key))
        with self._answering():
            response = await self._kv.Range(request, timeout=self._timeout)
        return response.header.revision, [(kv.key.decode(), kv.value) for kv in response.kvs]

    async def get(self, key: str) -> bytes | None:
        """The value of exactly `key`, or None if it does not exist."""
        with self._answering():
            response = await self._kv.Range(
                rpc.RangeRequest(key=key.encode()), timeout=self._timeout
            )
        return bytes(response.kvs[0].value) if response.kvs else None

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        request = rpc.PutRequest(key=key.encode(), value=value, lease=lease)
        with self._answering():
            response = await self._kv.Put(request, timeout=self._timeout)
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        """Delete `key`; returns how many keys were deleted (0 or 1)."""
        with self._answering():
            response = await self._kv.DeleteRange(
                rpc.DeleteRangeRequest(key=key.encode()), timeout=self._timeout
            )
        return int(response.deleted)

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id."""
        with self._answering():
            response = await self._lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=self._timeout
            )
        if response.error:
            raise RegistryUnavailable(f"etcd at {self.endpoint} refused a lease: {response.error}")
        return int(response.ID)

    async def revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease, deleting its keys. A lease already gone is not an error."""
        with self._answering():
            try:
                await self._lease.LeaseRevoke(
                    rpc.LeaseRevokeRequest(ID=lease_id), timeout=timeout or self._timeout
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.NOT_FOUND:
                    raise

    async def keepalive(self, lease_id: int, interval: float) -> AsyncIterator[int]:
        """Refresh a lease every `interval` seconds on one stream; yields the TTL etcd
        grants each time. A TTL of 0 means the lease no longer exists."""

        async def beats() -> AsyncIterator[object]:
            while True:
                yield rpc.LeaseKeepAliveRequest(ID=lease_id)
                await asyncio.sleep(interval)

        call = self._lease.LeaseKeepAlive(beats())
        try:
            while True:
                with self._answering():
                    async with asyncio.timeout(interval + self._timeout):
                        response = await call.read()
                if response is grpc.aio.EOF:
                    raise RegistryUnavailable(
                        f"etcd at {self.endpoint} closed the keepalive stream"
                    )
                yield int(response.TTL)
        except TimeoutError as error:
            raise RegistryUnavailable(
                f"etcd at {self.endpoint} stopped answering keepalives"
            ) from error
        finally:
            call.cancel()

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[tuple[int, list[Change]]]:
        """Changes under `prefix` from `start_revision` on, as (revision, changes) batches."""
        key = prefix.encode()
        create = rpc.WatchCreateRequest(
            key=key, range_end=_range_end(key), start_revision=start_revision
        )
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[object]:
            yield rpc.WatchRequest(create_request=create)
            await stop.wait()  # keep the stream open: closing it ends the watch

        call = self._watch.Watch(requests())
        try:
            while True:
                with self._answering():
                    response = await call.read()
                if response is grpc.aio.EOF:
                    break
                if response.compact_revision:
                    raise RevisionCompacted(int(response.compact_revision))
                if response.canceled:
                    raise RegistryUnavailable(f"etcd cancelled the watch: {response.cancel_reason}")
                if response.events:
                    yield (
                        int(response.header.revision),
                        [
                            Change(e.kv.key.decode(), None if e.type == e.DELETE else e.kv.value)
                            for e in response.events
                        ],
                    )
            raise RegistryUnavailable(f"etcd at {self.endpoint} closed the watch stream")
        finally:
            stop.set()
            call.cancel()

    async def aclose(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
