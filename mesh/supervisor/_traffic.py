"""`meshctl traffic`: a service's split of calls over its versions, live.

The split lives in etcd (`traffic_key`); the control plane pushes it to every sidecar
over RDS and the proxyless clients read it there. Setting it writes the key, then asks
every sidecar's Envoy admin (`/config_dump`) until each one routes by the new weights,
so the command says when the change is in force rather than when it was written.
Showing it also reads each sidecar's `/runtime`: an admin-layer override of
`weights.<service>.<cluster>` beats xDS on that one sidecar, and is reported as drift.

Bad input raises ConfigError naming the flag (`--weights`); meshctl exits 2 on it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mesh.config import MeshConfig, ServiceSpec
from mesh.envoy import OUTBOUND, weights_runtime_prefix
from mesh.errors import ConfigError
from mesh.registry import (
    Endpoint,
    EtcdClient,
    decode_weights,
    encode_weights,
    services_root,
    traffic_key,
)

__all__ = [
    "CONFIRM_TIMEOUT",
    "Confirmation",
    "Rollout",
    "Sidecar",
    "SidecarTraffic",
    "TrafficReport",
    "admin_get",
    "apply_weights",
    "format_weights",
    "known_versions",
    "live_weights",
    "parse_weights",
    "registered_endpoints",
    "route_weights",
    "runtime_overrides",
    "set_weights",
    "sidecars_of",
    "switch_weights",
    "traffic_report",
    "validate_weights",
]

CONFIRM_TIMEOUT = 5.0
"""Seconds `set_weights` waits for every sidecar to route by the new split."""

_POLL = 0.05  # seconds between two looks at a sidecar's config
_ADMIN_TIMEOUT = 2.0
_MAX_WEIGHT = 1_000_000  # Envoy sums weights in 32 bits: keep any sum far below that
_VERSION = re.compile(r"[a-z][a-z0-9-]{0,62}")  # mesh.yaml's rule for version names
_WHOLE = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes "²" too
_SHOWN = 40  # characters of a bad flag value an error repeats

# Loopback admin addresses: never through a proxy the environment may name.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


# -- the split as flags give it ---------------------------------------------------------


def parse_weights(text: str) -> dict[str, int]:
    """`v1=90,v2=10` as {"v1": 90, "v2": 10}; raises ConfigError("--weights", ...)."""
    weights: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        version, sep, value = part.partition("=")
        version, value = version.strip(), value.strip()
        if not sep or not version:
            raise ConfigError(
                "--weights", f"give version=weight pairs like v1=90,v2=10, got {_shown(part)}"
            )
        if _VERSION.fullmatch(version) is None:
            raise ConfigError(
                "--weights",
                f"{_shown(version)} is no version name (lowercase letters, digits, '-')",
            )
        if version in weights:
            raise ConfigError("--weights", f"{version} is given twice")
        if _WHOLE.fullmatch(value) is None or int(value) > _MAX_WEIGHT:
            raise ConfigError(
                "--weights",
                f"{version}: weights are whole numbers from 0 to {_MAX_WEIGHT}, got {_shown(value)}",
            )
        weights[version] = int(value)
    if not any(weights.values()):
        raise ConfigError("--weights", "at least one version needs a weight above 0")
    return weights


def known_versions(spec: ServiceSpec, endpoints: Iterable[Endpoint]) -> tuple[str, ...]:
    """The versions of `spec` that can get calls: mesh.yaml's, then any other registered
    (the order the control plane lists clusters in)."""
    declared = list(spec.running_versions)
    seen = {e.version for e in endpoints if e.service == spec.name}
    return (*declared, *sorted(seen - set(declared)))


def validate_weights(
    spec: ServiceSpec, versions: Sequence[str], weights: Mapping[str, int]
) -> dict[str, int]:
    """`weights` over every one of `versions` (those not named get 0); raises
    ConfigError naming a version the service does not run."""
    unknown = [v for v in weights if v not in versions]
    if unknown:
        raise ConfigError(
            "--weights",
            f"{spec.name} runs no version {', '.join(unknown[:5])} "
            f"(it runs {', '.join(versions)}: mesh.yaml's and the registered ones)",
        )
    if not any(weights.values()):
        raise ConfigError("--weights", "at least one version needs a weight above 0")
    return {version: int(weights.get(version, 0)) for version in versions}


def switch_weights(spec: ServiceSpec, versions: Sequence[str], target: str) -> dict[str, int]:
    """Blue-green: every call to `target`, none to the others."""
    if target not in versions:
        raise ConfigError(
            "--switch",
            f"{spec.name} runs no version {_shown(target)} (it runs {', '.join(versions)})",
        )
    return {version: 100 if version == target else 0 for version in versions}


def format_weights(weights: Mapping[str, int] | None) -> str:
    if weights is None:
        return "-"
    return " ".join(f"{version}={weight}" for version, weight in weights.items()) or "-"


# -- etcd --------------------------------------------------------------------------------


async def registered_endpoints(config: MeshConfig, etcd: EtcdClient) -> list[Endpoint]:
    """Every registered instance of every service (malformed entries skipped)."""
    _, items = await etcd.get_prefix(services_root(config.etcd.prefix))
    found = []
    for _, value in items:
        try:
            found.append(Endpoint.from_json(value))
        except ValueError:
            continue
    return sorted(found, key=lambda e: (e.service, e.instance_id))


async def live_weights(config: MeshConfig, etcd: EtcdClient, service: str) -> dict[str, int] | None:
    """The split etcd holds for `service`; None when it has none (or a malformed one,
    which every reader ignores too): the declared split holds."""
    raw = await etcd.get(traffic_key(config.etcd.prefix, service))
    if raw is None:
        return None
    try:
        return decode_weights(raw)
    except ValueError:
        return None


# -- sidecars and their admin ------------------------------------------------------------


@dataclass(frozen=True)
class Sidecar:
    """One instance's Envoy, as the instance registered it."""

    instance: str
    service: str
    version: str
    admin: str  # host:port of its admin listener


def sidecars_of(endpoints: Iterable[Endpoint]) -> list[Sidecar]:
    """Every registered instance with a sidecar: each has routes to every service."""
    return [
        Sidecar(e.instance_id, e.service, e.version, e.metadata["envoy_admin"])
        for e in endpoints
        if e.metadata.get("envoy_admin")
    ]


def _http_get(url: str, timeout: float) -> str:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return str(response.read().decode())


async def admin_get(admin: str, path: str, timeout: float = _ADMIN_TIMEOUT) -> str:
    """GET `path` from an Envoy admin (in a thread); raises OSError if it does not answer
    (urllib's errors are OSErrors)."""
    return await asyncio.to_thread(_http_get, f"http://{admin}{path}", timeout)


async def _admin_json(admin: str, path: str) -> Any:
    """The JSON an admin answers; raises OSError or ValueError."""
    return json.loads(await admin_get(admin, path))


def _admin_problem(admin: str, error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"admin {admin} answered HTTP {error.code}"
    if isinstance(error, ValueError):
        return f"admin {admin} answered no JSON"
    reason = getattr(error, "reason", None) or error
    return f"admin {admin} does not answer ({reason})"


def route_weights(config_dump: Mapping[str, Any], service: str) -> dict[str, int] | None:
    """The split of calls to `service` in a sidecar's route config "outbound", from its
    `/config_dump?resource=dynamic_route_configs`: version -> weight (a cluster not named
    `<service>_<version>` under its own name). None if it has no such route yet."""
    for entry in config_dump.get("configs", ()):
        route_config = entry.get("route_config", {}) if isinstance(entry, dict) else {}
        if route_config.get("name") != OUTBOUND:
            continue
        for host in route_config.get("virtual_hosts", ()):
            if host.get("name") != service:
                continue
            for route in host.get("routes", ()):
                clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters")
                if clusters is not None:
                    return {
                        _version_of(service, c.get("name", "")): int(c.get("weight", 0))
                        for c in clusters
                    }
    return None


def _version_of(service: str, cluster: str) -> str:
    return cluster.removeprefix(f"{service}_")


def runtime_overrides(runtime: Mapping[str, Any], service: str) -> dict[str, int]:
    """The weight overrides of `service` in a sidecar's `/runtime` JSON: version ->
    weight, for every `weights.<service>.<cluster>` some runtime layer sets (the admin
    layer, in practice). A value that is no whole number is left out: Envoy ignores it
    too and keeps the xDS weight."""
    prefix = weights_runtime_prefix(service) + "."
    found = {}
    for key, entry in runtime.get("entries", {}).items():
        if not key.startswith(prefix) or not isinstance(entry, dict):
            continue
        value = str(entry.get("final_value", "")).strip()
        if _WHOLE.fullmatch(value):
            found[_version_of(service, key.removeprefix(prefix))] = int(value)
    return found


# -- setting the split ---------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """What one sidecar showed after a new split was written."""

    instance: str
    admin: str
    weights: dict[str, int] | None  # its route's split when last asked; None: none seen
    seconds: float | None  # from the write until it showed the split; None: never
    overrides: dict[str, int] = field(default_factory=dict)  # its runtime overrides
    error: str = ""  # why its admin could not tell, if it could not

    @property
    def confirmed(self) -> bool:
        return self.seconds is not None


@dataclass(frozen=True)
class Rollout:
    """A split written to etcd, and how each sidecar took it."""

    service: str
    weights: dict[str, int]
    sidecars: list[Confirmation]
    timeout: float

    @property
    def confirmed(self) -> bool:
        return all(c.confirmed for c in self.sidecars)

    @property
    def seconds(self) -> float:
        """Until the last sidecar routed by the split (0 without sidecars)."""
        return max((c.seconds or 0.0 for c in self.sidecars), default=0.0)

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "weights": self.weights,
            "confirmed": self.confirmed,
            "seconds": round(self.seconds, 4),
            "sidecars": [asdict(c) for c in self.sidecars],
        }


def _routes_as(seen: Mapping[str, int] | None, wanted: Mapping[str, int]) -> bool:
    """Whether a sidecar's split is `wanted`: every cluster it has gets its wanted
    weight (0 if unnamed), and every version with calls wanted has a cluster."""
    if seen is None:
        return False
    if any(weight != wanted.get(version, 0) for version, weight in seen.items()):
        return False
    return all(version in seen for version, weight in wanted.items() if weight)


async def _confirm(
    sidecar: Sidecar, service: str, wanted: Mapping[str, int], started: float, timeout: float
) -> Confirmation:
    seen: dict[str, int] | None = None
    error = ""
    while True:
        try:
            dump = await _admin_json(sidecar.admin, "/config_dump?resource=dynamic_route_configs")
            seen, error = route_weights(dump, service), ""
        except (OSError, ValueError) as problem:
            error = _admin_problem(sidecar.admin, problem)
        elapsed = time.monotonic() - started
        if _routes_as(seen, wanted):
            return Confirmation(sidecar.instance, sidecar.admin, seen, elapsed)
        if elapsed >= timeout:
            return Confirmation(sidecar.instance, sidecar.admin, seen, None, error=error)
        await asyncio.sleep(_POLL)


async def _with_overrides(
    sidecar: Sidecar, service: str, confirmation: Confirmation
) -> Confirmation:
    """`confirmation` with the sidecar's runtime overrides, which beat the split."""
    try:
        overrides = runtime_overrides(await _admin_json(sidecar.admin, "/runtime"), service)
    except (OSError, ValueError):
        return confirmation
    return replace(confirmation, overrides=overrides)


async def apply_weights(
    config: MeshConfig,
    etcd: EtcdClient,
    service: str,
    weights: Mapping[str, int],
    *,
    timeout: float = CONFIRM_TIMEOUT,
) -> Rollout:
    """Write `weights` (already validated) as `service`'s live split, then wait up to
    `timeout` s until every sidecar routes by it."""
    sidecars = sidecars_of(await registered_endpoints(config, etcd))
    await etcd.put(traffic_key(config.etcd.prefix, service), encode_weights(weights))
    started = time.monotonic()
    confirmations = await asyncio.gather(
        *(_confirm(s, service, weights, started, timeout) for s in sidecars)
    )
    confirmations = await asyncio.gather(
        *(_with_overrides(s, service, c) for s, c in zip(sidecars, confirmations, strict=True))
    )
    return Rollout(service, dict(weights), list(confirmations), timeout)


async def set_weights(
    config: MeshConfig,
    etcd: EtcdClient,
    service: str,
    *,
    weights: Mapping[str, int] | None = None,
    switch: str | None = None,
    timeout: float = CONFIRM_TIMEOUT,
) -> Rollout:
    """`meshctl traffic <service> --weights ...` (or `--switch <version>`): validate
    against the versions the service runs, write, and confirm on every sidecar.
    Raises ConfigError for an unknown service or version."""
    spec = config.service(service)
    versions = known_versions(spec, await registered_endpoints(config, etcd))
    if switch is not None:
        split = switch_weights(spec, versions, switch)
    else:
        split = validate_weights(spec, versions, weights or {})
    return await apply_weights(config, etcd, service, split, timeout=timeout)


# -- showing the split --------------------------------------------------------------------


@dataclass(frozen=True)
class SidecarTraffic:
    """How one sidecar splits calls to the service."""

    instance: str
    service: str  # the instance's own service
    admin: str
    xds: dict[str, int] | None  # the split its route config holds (from xDS)
    overrides: dict[str, int]  # runtime overrides of weights.<service>.<cluster>
    drifted: bool  # an override differs from the split in force
    stale: bool  # its xDS split is not the one in force (yet)
    error: str = ""


def _drifted(overrides: Mapping[str, int], in_force: Mapping[str, int]) -> bool:
    return any(weight != in_force.get(version, 0) for version, weight in overrides.items())


async def _sidecar_traffic(
    sidecar: Sidecar, service: str, in_force: Mapping[str, int]
) -> SidecarTraffic:
    try:
        dump, runtime = await asyncio.gather(
            _admin_json(sidecar.admin, "/config_dump?resource=dynamic_route_configs"),
            _admin_json(sidecar.admin, "/runtime"),
        )
    except (OSError, ValueError) as problem:
        error = _admin_problem(sidecar.admin, problem)
        return SidecarTraffic(
            sidecar.instance, sidecar.service, sidecar.admin, None, {}, False, False, error
        )
    xds = route_weights(dump, service)
    overrides = runtime_overrides(runtime, service)
    return SidecarTraffic(
        instance=sidecar.instance,
        service=sidecar.service,
        admin=sidecar.admin,
        xds=xds,
        overrides=overrides,
        drifted=_drifted(overrides, in_force),
        stale=not _routes_as(xds, in_force),
    )


@dataclass(frozen=True)
class TrafficReport:
    """`meshctl traffic <service>`; `to_json()` is its `--json` (fields are only added)."""

    service: str
    versions: tuple[str, ...]  # every version that can get calls
    declared: dict[str, int]  # mesh.yaml's split
    live: dict[str, int] | None  # etcd's split; None: as declared
    sidecars: list[SidecarTraffic]

    @property
    def in_force(self) -> dict[str, int]:
        """The split both data planes route by: the live one, else the declared one."""
        split = self.live if self.live is not None else self.declared
        return {version: split.get(version, 0) for version in self.versions}

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "versions": list(self.versions),
            "declared": self.declared,
            "live": self.live,
            "in_force": self.in_force,
            "proxyless": self.in_force,  # the proxyless client reads etcd's split itself
            "sidecars": [asdict(s) for s in self.sidecars],
            "drifted": [s.instance for s in self.sidecars if s.drifted],
        }


async def traffic_report(config: MeshConfig, etcd: EtcdClient, service: str) -> TrafficReport:
    """The declared, live and per-sidecar split of `service`; raises ConfigError for an
    unknown service."""
    spec = config.service(service)
    endpoints = await registered_endpoints(config, etcd)
    versions = known_versions(spec, endpoints)
    live = await live_weights(config, etcd, service)
    declared = spec.declared_weights()
    report = TrafficReport(service, versions, declared, live, [])
    sidecars = await asyncio.gather(
        *(_sidecar_traffic(s, service, report.in_force) for s in sidecars_of(endpoints))
    )
    return TrafficReport(service, versions, declared, live, list(sidecars))
