"""Endpoint sets of a service, and any other tree of keys, kept current by watching etcd."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from mesh.backoff import Backoff
from mesh.errors import RegistryUnavailable
from mesh.registry._etcd import EtcdClient
from mesh.registry._model import Endpoint, service_prefix

__all__ = ["EndpointSource", "EtcdDiscovery", "watch_tree"]

log = logging.getLogger("mesh.discovery")


class EndpointSource(Protocol):
    """An endless stream of the current endpoint set of a service, one set per change."""

    def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]: ...


async def watch_tree(etcd: EtcdClient, prefix: str) -> AsyncIterator[Mapping[str, bytes]]:
    """Every key under `prefix` with its value: once as listed, then after each change
    (a batch of changes at one revision is one update). While etcd is unreachable the
    last tree stays in force and nothing is yielded; on reconnect it lists again and
    yields if anything changed meanwhile."""
    backoff = Backoff(initial=0.1, maximum=1.0)
    last: dict[str, bytes] | None = None
    attempt = 0
    while True:
        try:
            revision, items = await etcd.get_prefix(prefix)
            current = dict(items)
            attempt = 0
            if current != last:
                last = dict(current)
                yield last
            async for _, changes in etcd.watch_prefix(prefix, revision + 1):
                for change in changes:
                    if change.value is None:
                        current.pop(change.key, None)
                    else:
                        current[change.key] = change.value
                if current != last:
                    last = dict(current)
                    yield last
        except RegistryUnavailable as error:
            if attempt == 0:
                log.warning(
                    "watching %s failed, keeping %d known keys: %s", prefix, len(last or ()), error
                )
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1


class EtcdDiscovery:
    """EndpointSource over etcd: the service's prefix, watched (see `watch_tree`); the
    instances are likely still up while etcd is unreachable, so the last set stays."""

    def __init__(self, etcd: EtcdClient, prefix: str) -> None:
        self._etcd = etcd
        self._prefix = prefix

    async def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]:
        last: frozenset[Endpoint] | None = None
        async for tree in watch_tree(self._etcd, service_prefix(self._prefix, service)):
            current = decode_endpoints(tree)
            if current != last:
                last = current
                yield current


def decode_endpoints(tree: Mapping[str, bytes]) -> frozenset[Endpoint]:
    """The endpoints registered in `tree` (key -> value); malformed entries are logged
    and skipped."""
    found = set()
    for key, value in tree.items():
        try:
            found.add(Endpoint.from_json(value))
        except ValueError as error:
            log.warning("ignoring malformed registry entry %s: %s", key, error)
    return frozenset(found)
