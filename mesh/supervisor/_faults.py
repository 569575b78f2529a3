"""`meshctl fault`: a service's per-method faults, live, for demos and tests.

mesh.yaml declares them (`services.<name>.faults`). Setting one writes the method's key
in etcd (`fault_key`), which overrides the declared fault of that method; every
instance of the service follows the keys (mesh.registry.LiveFaults) and applies a
change from its next call, within about a second, on both data planes. Clearing the
key gives the method mesh.yaml's fault again.

Methods are named as mesh.yaml names them, short (`GetProduct`) or full
(`shop.product.v1.ProductService/GetProduct`), and keyed as given; instances resolve
short names against the services they serve (a full name's key wins over a short
one's) and ignore, with a warning in their log, a name they do not serve.

Bad input raises ConfigError naming the flag; meshctl exits 2 on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mesh.config import FAULT_STATUSES, MAX_FAULT_DELAY_MS, METHOD_NAME, MeshConfig, MethodFault
from mesh.errors import ConfigError
from mesh.registry import EtcdClient, decode_fault, encode_fault, fault_key, faults_root

__all__ = [
    "FaultReport",
    "clear_faults",
    "fault_report",
    "fault_report_text",
    "format_fault",
    "live_faults",
    "parse_fault",
    "parse_method",
    "set_fault",
]


def parse_method(name: str) -> str:
    """`name`, if it names a method as mesh.yaml's faults do; else ConfigError."""
    try:
        return METHOD_NAME.check(name)
    except ValueError as error:
        raise ConfigError("METHOD", str(error)) from None


def _percent(flag: str, value: float | None, default: float) -> float:
    if value is None:
        return default
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise ConfigError(flag, f"a percent from 0 to 100, got {value:g}")
    return value


def parse_fault(
    *,
    fail: float | None = None,
    status: str | None = None,
    delay: int | None = None,
    delay_percent: float | None = None,
) -> MethodFault:
    """The fault the flags describe, whole: what a flag leaves out is MethodFault's
    default (no failure, UNAVAILABLE, no delay, every call delayed once there is one),
    not what the method had before. Raises ConfigError naming a bad flag."""
    if fail is None and status is None and delay is None and delay_percent is None:
        raise ConfigError("--fail", "give --fail PERCENT and/or --delay MS (or --clear)")
    code = (status or "UNAVAILABLE").strip().upper()
    if code not in FAULT_STATUSES:
        raise ConfigError(
            "--status", f"a gRPC code name other than OK, one of {', '.join(FAULT_STATUSES)}"
        )
    if delay is not None and not 0 <= delay <= MAX_FAULT_DELAY_MS:
        raise ConfigError("--delay", f"milliseconds from 0 to {MAX_FAULT_DELAY_MS}, got {delay}")
    return MethodFault(
        fail_percent=_percent("--fail", fail, 0.0),
        status=code,  # type: ignore[arg-type]  # checked above: one of the Literal's names
        delay_ms=delay or 0,
        delay_percent=_percent("--delay-percent", delay_percent, 100.0),
    )


def format_fault(fault: MethodFault) -> str:
    """E.g. "fail 30% UNAVAILABLE, delay 200 ms on 50%"; "none" if it injects nothing."""
    parts = []
    if fault.fail_percent > 0:
        parts.append(f"fail {fault.fail_percent:g}% {fault.status}")
    if fault.delay_ms > 0 and fault.delay_percent > 0:
        share = f" on {fault.delay_percent:g}%" if fault.delay_percent < 100 else ""
        parts.append(f"delay {fault.delay_ms} ms{share}")
    return ", ".join(parts) or "none"


async def live_faults(config: MeshConfig, etcd: EtcdClient, service: str) -> dict[str, MethodFault]:
    """The faults etcd holds for `service`, by method as keyed (a malformed value,
    which every instance ignores too, is left out)."""
    root = faults_root(config.etcd.prefix, service)
    _, items = await etcd.get_prefix(root)
    found = {}
    for key, raw in items:
        try:
            found[key.removeprefix(root)] = decode_fault(raw)
        except ValueError:
            continue
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class FaultReport:
    """`meshctl fault <service>`; `to_json()` is its `--json` (fields are only added)."""

    service: str
    declared: Mapping[str, MethodFault]  # mesh.yaml's, by method as it names them
    live: Mapping[str, MethodFault]  # etcd's, by method as keyed

    @property
    def in_force(self) -> dict[str, MethodFault]:
        """Each method's fault as instances apply it: etcd's, else mesh.yaml's (by the
        name as written: a short and a full name of one method are two entries)."""
        return {**self.declared, **self.live}

    def to_json(self) -> dict[str, object]:
        def plain(faults: Mapping[str, MethodFault]) -> dict[str, object]:
            return {method: asdict(fault) for method, fault in faults.items()}

        return {
            "service": self.service,
            "declared": plain(self.declared),
            "live": plain(self.live),
            "in_force": plain(self.in_force),
        }


async def fault_report(config: MeshConfig, etcd: EtcdClient, service: str) -> FaultReport:
    """The declared and live faults of `service`; raises ConfigError for an unknown one."""
    spec = config.service(service)
    return FaultReport(service, dict(spec.faults), await live_faults(config, etcd, service))


async def set_fault(
    config: MeshConfig, etcd: EtcdClient, service: str, method: str, fault: MethodFault
) -> FaultReport:
    """Write `fault` as `method`'s live fault (it overrides mesh.yaml's); raises
    ConfigError for an unknown service or a malformed method name."""
    config.service(service)
    key = fault_key(config.etcd.prefix, service, parse_method(method))
    await etcd.put(key, encode_fault(fault))
    return await fault_report(config, etcd, service)


async def clear_faults(
    config: MeshConfig, etcd: EtcdClient, service: str, method: str | None = None
) -> tuple[list[str], FaultReport]:
    """Delete `method`'s live fault (every live fault of `service` if None), so that
    mesh.yaml's holds again. Returns the methods cleared, and the report after."""
    config.service(service)
    if method is not None:
        parse_method(method)
    cleared = [m for m in await _keyed_methods(config, etcd, service) if method in (None, m)]
    for name in cleared:
        await etcd.delete(fault_key(config.etcd.prefix, service, name))
    return cleared, await fault_report(config, etcd, service)


async def _keyed_methods(config: MeshConfig, etcd: EtcdClient, service: str) -> list[str]:
    """Every method with a key under `service`'s faults, malformed values included."""
    root = faults_root(config.etcd.prefix, service)
    _, items = await etcd.get_prefix(root)
    return sorted(key.removeprefix(root) for key, _ in items)


def fault_report_text(report: FaultReport) -> str:
    """The report as `meshctl fault <service>` prints it."""
    if not report.in_force:
        return f"{report.service}: no faults (mesh.yaml declares none, etcd holds none)"
    rows = [("METHOD", "IN FORCE", "FROM")]
    for method, fault in report.in_force.items():
        declared = report.declared.get(method)
        if method not in report.live:
            source = "mesh.yaml"
        elif declared is None:
            source = "etcd"
        else:
            source = f"etcd (over mesh.yaml's {format_fault(declared)})"
        rows.append((method, format_fault(fault), source))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join([f"{report.service}: faults injected per method", *lines])
