"""A service's live per-method faults in etcd: what `meshctl fault` writes, and what
every instance of the service follows.

One key per method (`fault_key`), so that setting or clearing one method's fault never
races a change of another's. A method's key overrides mesh.yaml's fault for it; an
absent key means "as declared".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict

from pydantic import TypeAdapter, ValidationError

from mesh.config import MethodFault
from mesh.registry._discovery import watch_tree
from mesh.registry._etcd import EtcdClient
from mesh.registry._model import faults_root
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["LiveFaults", "decode_fault", "encode_fault"]

log = logging.getLogger("mesh.registry")

_FAULT = TypeAdapter(MethodFault)


def encode_fault(fault: MethodFault) -> bytes:
    return json.dumps(asdict(fault), sort_keys=True).encode()


def decode_fault(raw: bytes) -> MethodFault:
    """Raises ValueError if `raw` is not a valid MethodFault in JSON."""
    try:
        return _FAULT.validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"not a fault: {where + ': ' if where else ''}{first['msg']}") from None


class LiveFaults:
    """The live faults of one service, kept current from etcd.

    `faults` maps each method with a key (named as the key names it) to its fault;
    `listen(callback)` is called after every change. A malformed value is logged and
    left out, so that method has mesh.yaml's fault again.
    """

    def __init__(self, etcd: EtcdClient, prefix: str, service: str) -> None:
        self._etcd = etcd
        self._root = faults_root(prefix, service)
        self.faults: dict[str, MethodFault] = {}
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def start(self) -> None:
        self._task = start_background(self._follow(), "live faults")

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _follow(self) -> None:
        async for tree in watch_tree(self._etcd, self._root):
            faults: dict[str, MethodFault] = {}
            for key, raw in tree.items():
                try:
                    faults[key.removeprefix(self._root)] = decode_fault(raw)
                except ValueError as error:
                    log.warning("ignoring %s: %s", key, error)
            if faults != self.faults:
                self.faults = faults
                for callback in self._listeners:
                    callback()
