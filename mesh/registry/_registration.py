"""Keep one instance registered in etcd under a lease, for as long as it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesh.backoff import Backoff
from mesh.errors import RegistryUnavailable
from mesh.registry._etcd import EtcdClient
from mesh.registry._model import Endpoint, instance_key
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["Registration"]

log = logging.getLogger("mesh.registry")


class _LeaseLost(Exception):
    pass


class Registration:
    """Registers `endpoint` at <prefix>/services/<service>/<instance id> (or `key`) under
    a lease of `ttl` seconds and keeps it alive on one keepalive stream.

    If the lease is lost (etcd restarted without its data, or a long partition) or the
    stream breaks, it registers again under a new lease, retrying with backoff until
    etcd answers. `aclose()` revokes the lease, which removes the key at once.
    """

    def __init__(
        self, etcd: EtcdClient, prefix: str, endpoint: Endpoint, ttl: int, *, key: str | None = None
    ) -> None:
        self._etcd = etcd
        self._key = key or instance_key(prefix, endpoint.service, endpoint.instance_id)
        self._value = endpoint.to_json()
        self._ttl = ttl
        self._lease: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.1, maximum=1.0)
        self.registrations = 0  # how many times the key was (re)written; for logs and tests

    @property
    def key(self) -> str:
        return self._key

    @property
    def lease(self) -> int | None:
        """The lease the key hangs on now (None before start and after close)."""
        return self._lease

    async def start(self, timeout: float = 10.0) -> None:
        """Register, retrying until etcd answers or `timeout` passes, then keep alive."""
        try:
            async with asyncio.timeout(timeout):
                await self._register_until_done()
        except TimeoutError:
            raise RegistryUnavailable(
                f"could not register {self._key} at etcd {self._etcd.endpoint} within {timeout:.0f}s"
            ) from None
        self._task = start_background(self._maintain(), f"registration {self._key}")

    async def _register_once(self) -> None:
        old, self._lease = self._lease, await self._etcd.grant(self._ttl)
        await self._etcd.put(self._key, self._value, lease=self._lease)
        self.registrations += 1
        if old is not None:
            # The key now hangs on the new lease; dropping the old one cannot delete it.
            with contextlib.suppress(RegistryUnavailable):
                await self._etcd.revoke(old)

    async def _register_until_done(self) -> None:
        attempt = 0
        while True:
            try:
                await self._register_once()
                return
            except RegistryUnavailable as error:
                if attempt == 0:
                    log.warning("registering %s failed, retrying: %s", self._key, error)
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1

    async def _maintain(self) -> None:
        while True:
            assert self._lease is not None
            try:
                async for ttl in self._etcd.keepalive(self._lease, interval=self._ttl / 3):
                    if ttl <= 0:
                        raise _LeaseLost(f"lease {self._lease:x} expired")
            except (RegistryUnavailable, _LeaseLost) as error:
                log.warning("registration of %s lost (%s); registering again", self._key, error)
            await self._register_until_done()
            log.info("registered %s again (lease %x)", self._key, self._lease)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop keeping alive and revoke the lease; the key disappears from etcd."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._lease is not None:
            try:
                await self._etcd.revoke(self._lease, timeout=timeout)
            except RegistryUnavailable as error:
                log.warning("could not deregister %s, its lease will expire: %s", self._key, error)
            self._lease = None
