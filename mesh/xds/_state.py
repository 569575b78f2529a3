"""The control plane's picture of the mesh: mesh.yaml's services, plus what etcd holds
(every registered instance, the live authz table and version weights), as one
MeshView that is rebuilt after every change."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping

from mesh.config import MeshConfig
from mesh.envoy import MeshView
from mesh.registry import (
    Endpoint,
    EtcdClient,
    LivePolicy,
    decode_endpoints,
    services_root,
    watch_tree,
)
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["MeshWatcher"]

log = logging.getLogger("mesh.xds")


def _by_service(tree: Mapping[str, bytes]) -> dict[str, frozenset[Endpoint]]:
    grouped: dict[str, set[Endpoint]] = defaultdict(set)
    for endpoint in decode_endpoints(tree):
        grouped[endpoint.service].add(endpoint)
    return {service: frozenset(found) for service, found in grouped.items()}


class MeshWatcher:
    """Follows etcd for `config`'s mesh and calls `changed(view)` with the new view
    after each change (and once the registry has first been read)."""

    def __init__(
        self, config: MeshConfig, etcd: EtcdClient, changed: Callable[[MeshView], None]
    ) -> None:
        self._config = config
        self._etcd = etcd
        self._changed = changed
        self._endpoints: dict[str, frozenset[Endpoint]] = {}
        self._live = LivePolicy(etcd, config.etcd.prefix, config.authz)
        self._live.listen(self._publish)
        self._task: asyncio.Task[None] | None = None
        self.view = self._build()

    def start(self) -> None:
        self._live.start()
        self._task = start_background(self._follow_registry(), "registry")

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._live.aclose()

    async def _follow_registry(self) -> None:
        async for tree in watch_tree(self._etcd, services_root(self._config.etcd.prefix)):
            self._endpoints = _by_service(tree)
            self._publish()

    def _build(self) -> MeshView:
        config = self._config
        return MeshView(
            trust_domain=config.trust_domain,
            namespace=config.namespace,
            services=config.services,
            endpoints=self._endpoints,
            authz=self._live.authz,
            weights=self._live.weights,
            default_timeout=config.client.timeout,
            connect_timeout=config.client.connect_timeout,
            attempts=config.client.retry.max_attempts,
            per_try_timeout=config.client.retry.per_try_timeout,
        )

    def _publish(self) -> None:
        view = self._build()
        if view != self.view:
            self.view = view
            self._changed(view)
