"""Endpoint sets of a service, kept current by watching etcd."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from mesh.backoff import Backoff
from mesh.errors import RegistryUnavailable
from mesh.registry._etcd import EtcdClient
from mesh.registry._model import Endpoint, service_prefix

__all__ = ["EndpointSource", "EtcdDiscovery"]

log = logging.getLogger("mesh.discovery")


class EndpointSource(Protocol):
    """An endless stream of the current endpoint set of a service, one set per change."""

    def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]: ...


class EtcdDiscovery:
    """EndpointSource over etcd: lists the service's prefix, then watches it from the
    next revision. While etcd is unreachable the last set stays in force (the
    instances are likely still up); on reconnect it lists again."""

    def __init__(self, etcd: EtcdClient, prefix: str) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._backoff = Backoff(initial=0.1, maximum=1.0)

    async def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]:
        prefix = service_prefix(self._prefix, service)
        last: frozenset[Endpoint] | None = None
        attempt = 0
        while True:
            try:
                revision, items = await self._etcd.get_prefix(prefix)
                current = {key: ep for key, value in items if (ep := _decode(key, value))}
                attempt = 0
                if frozenset(current.values()) != last:
                    last = frozenset(current.values())
                    yield last
                async for _, changes in self._etcd.watch_prefix(prefix, revision + 1):
                    for change in changes:
                        endpoint = _decode(change.key, change.value) if change.value else None
                        if endpoint:
                            current[change.key] = endpoint
                        else:
                            current.pop(change.key, None)
                    if frozenset(current.values()) != last:
                        last = frozenset(current.values())
                        yield last
            except RegistryUnavailable as error:
                if attempt == 0:
                    log.warning(
                        "watching %s failed, keeping %d known endpoints: %s",
                        prefix,
                        len(last or ()),
                        error,
                    )
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1


def _decode(key: str, value: bytes) -> Endpoint | None:
    try:
        return Endpoint.from_json(value)
    except ValueError as error:
        log.warning("ignoring malformed registry entry %s: %s", key, error)
        return None
