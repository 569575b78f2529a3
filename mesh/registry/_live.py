"""The mesh's live policy in etcd: the authz table and each service's version weights.

mesh.yaml declares both; `meshctl apply` and `meshctl traffic` write them to etcd, and
every process that enforces them (instances, the control plane) watches the keys, so
a change reaches both data planes at once. A key that is absent means "as declared".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence

from pydantic import TypeAdapter, ValidationError

from mesh.config import AuthzRule
from mesh.registry._discovery import watch_tree
from mesh.registry._etcd import EtcdClient
from mesh.registry._model import authz_key, traffic_root
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["LivePolicy", "decode_authz", "decode_weights", "encode_authz", "encode_weights"]

log = logging.getLogger("mesh.registry")

_RULES = TypeAdapter(tuple[AuthzRule, ...])


def encode_authz(rules: Sequence[AuthzRule]) -> bytes:
    return json.dumps(
        [{"callers": list(r.callers), "methods": list(r.methods)} for r in rules]
    ).encode()


def decode_authz(raw: bytes) -> tuple[AuthzRule, ...]:
    """Raises ValueError if `raw` is not a valid table."""
    try:
        return _RULES.validate_json(raw)
    except ValidationError as error:
        raise ValueError(f"not an authz table: {error.errors()[0]['msg']}") from None


def encode_weights(weights: Mapping[str, int]) -> bytes:
    return json.dumps(dict(weights), sort_keys=True).encode()


def decode_weights(raw: bytes) -> dict[str, int]:
    """Raises ValueError unless `raw` is a JSON object of versions to weights >= 0,
    one of them above 0."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in data.items()
    ):
        raise ValueError("weights must be a JSON object of versions to whole numbers >= 0")
    if not any(data.values()):
        raise ValueError("at least one version needs a weight above 0")
    return data


Listener = Callable[[], None]


class LivePolicy:
    """The current authz table and version weights, kept current from etcd.

    `authz` starts as `declared` and `weights` empty (each service: as declared);
    `listen(callback)` is called after every change. A malformed value in etcd is
    logged and ignored: the last good one stays in force.
    """

    def __init__(self, etcd: EtcdClient, prefix: str, declared: Sequence[AuthzRule]) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._declared = tuple(declared)
        self.authz: tuple[AuthzRule, ...] = self._declared
        self.weights: dict[str, dict[str, int]] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []

    def listen(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def start(self) -> None:
        self._tasks = [
            start_background(self._follow_authz(), "live authz"),
            start_background(self._follow_weights(), "live weights"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    async def _follow_authz(self) -> None:
        key = authz_key(self._prefix)
        async for tree in watch_tree(self._etcd, key):
            raw = tree.get(key)
            try:
                rules = self._declared if raw is None else decode_authz(raw)
            except ValueError as error:
                log.warning("ignoring %s: %s", key, error)
                continue
            if rules != self.authz:
                self.authz = rules
                log.info("authz table now has %d rules", len(rules))
                self._changed()

    async def _follow_weights(self) -> None:
        root = traffic_root(self._prefix)
        async for tree in watch_tree(self._etcd, root):
            weights: dict[str, dict[str, int]] = {}
            for key, raw in tree.items():
                try:
                    weights[key.removeprefix(root)] = decode_weights(raw)
                except ValueError as error:
                    log.warning("ignoring %s: %s", key, error)
            if weights != self.weights:
                self.weights = weights
                self._changed()

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()
