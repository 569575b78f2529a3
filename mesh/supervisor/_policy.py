"""`meshctl policy <service>`: each traffic policy mesh.yaml declares for a service, and
which data plane applies it, so that nothing declared is silently ignored; and
`meshctl apply`: the part of mesh.yaml that changes live (the authz table).

The sidecar data plane (Envoy) applies every policy. The proxyless client applies the
ones a client can (timeouts, retries and their budget, version weights); the others act
where calls arrive or on a shared proxy, so they need the sidecar. Instead of Envoy's
outlier detection it has its own breaker per endpoint (`client.breaker`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.client import service_policy
from mesh.config import AuthzRule, MeshConfig, ServiceSpec
from mesh.registry import EtcdClient, authz_key, decode_authz, encode_authz
from mesh.supervisor._traffic import format_weights

__all__ = ["AppliedAuthz", "PolicyRow", "Support", "apply_authz", "policy_rows"]

SIDECAR_ONLY = "no (sidecar only)"


@dataclass(frozen=True)
class Support:
    """Whether one data plane applies a policy, and how, in a few words."""

    applies: bool
    note: str  # "yes", "no (sidecar only)", or what it does instead


@dataclass(frozen=True)
class PolicyRow:
    """One policy of a service: as declared, and as each data plane applies it."""

    policy: str
    declared: dict[str, Any]  # the settings, as mesh.yaml's keys name them
    text: str  # the settings in a few words, for the table
    sidecar: Support
    direct: Support

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_YES = Support(True, "yes")
_NO = Support(False, SIDECAR_ONLY)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _timeout_row(config: MeshConfig, spec: ServiceSpec) -> PolicyRow:
    effective = service_policy(config.client, spec.policy)
    source = (
        "policy.timeout"
        if spec.policy.timeout is not None
        else "client.timeout: the policy sets none"
    )
    per_try = effective.retry.per_try_timeout
    per_try_source = (
        "policy.retries" if spec.policy.retries.per_try_timeout is not None else "client.retry"
    )
    return PolicyRow(
        "timeouts",
        {"timeout": effective.timeout, "per_try_timeout": per_try},
        f"{_seconds(effective.timeout)} per call ({source}), "
        f"{_seconds(per_try)} per try ({per_try_source}); a caller's deadline wins",
        _YES,
        _YES,
    )


def _retries_row(config: MeshConfig, spec: ServiceSpec) -> PolicyRow:
    attempts = service_policy(config.client, spec.policy).retry.max_attempts
    source = "policy.retries" if spec.policy.retries.attempts is not None else "client.retry"
    return PolicyRow(
        "retries",
        {"attempts": attempts},
        f"{attempts} attempts ({source}): UNAVAILABLE on idempotent methods, "
        "connect failures on any",
        _YES,
        _YES,
    )


def _budget_row(spec: ServiceSpec) -> PolicyRow:
    budget = spec.policy.retries.budget
    return PolicyRow(
        "retry budget",
        dataclasses.asdict(budget),
        f"{budget.percent:g}% of requests, at least {budget.min_retries_per_second}/s",
        _YES,
        _YES,
    )


def _limits_row(spec: ServiceSpec) -> PolicyRow:
    limits = spec.policy.limits
    return PolicyRow(
        "connection limits",
        dataclasses.asdict(limits),
        f"{limits.max_connections} connections, {limits.max_pending_requests} pending, "
        f"{limits.max_requests} requests per caller sidecar and version",
        _YES,
        _NO,
    )


def _outlier_row(config: MeshConfig, spec: ServiceSpec) -> PolicyRow:
    outlier = spec.policy.outlier
    breaker = config.client.breaker
    instead = Support(
        False,
        f"no: its own breaker per endpoint instead ({breaker.failure_threshold} failures "
        f"open it, a trial call after {_seconds(breaker.reset_timeout)}: client.breaker)",
    )
    return PolicyRow(
        "outlier detection",
        dataclasses.asdict(outlier),
        f"eject after {outlier.consecutive_failures} failures in a row for "
        f"{_seconds(outlier.base_ejection_time)}+, sweep every {_seconds(outlier.interval)}, "
        f"at most {outlier.max_ejection_percent}% of a version",
        _YES,
        instead,
    )


def _weights_row(spec: ServiceSpec, live: Mapping[str, int] | None, known: bool) -> PolicyRow:
    declared = spec.declared_weights()
    source = "policy.weights" if spec.policy.weights is not None else "by instances"
    if not known:
        now = "live split unknown: the mesh is not running"
    elif live is None:
        now = "live: as declared"
    else:
        now = f"live: {format_weights(live)} (meshctl traffic)"
    return PolicyRow(
        "version weights",
        {"weights": declared, "live": dict(live) if live is not None else None},
        f"{format_weights(declared)} ({source}); {now}",
        _YES,
        _YES,
    )


def _faults_row(spec: ServiceSpec) -> PolicyRow:
    faults = spec.policy.faults
    return PolicyRow(
        "fault injection",
        dataclasses.asdict(faults),
        f"delay {faults.delay_percent}% by {faults.delay_ms} ms, abort {faults.abort_percent}% "
        f"with status {faults.abort_grpc_status}; runtime keys fault.* on its sidecar",
        _YES,
        _NO,
    )


def _rate_limit_row(spec: ServiceSpec) -> PolicyRow:
    limit = spec.policy.rate_limit
    return PolicyRow(
        "rate limit",
        dataclasses.asdict(limit),
        f"{limit.tokens_per_second}/s, burst {limit.burst}; enabled {limit.enabled_percent}%, "
        f"enforced {limit.enforced_percent}% (runtime keys ratelimit.*)",
        _YES,
        _NO,
    )


def policy_rows(
    config: MeshConfig,
    service: str,
    live_weights: Mapping[str, int] | None = None,
    *,
    live_known: bool = True,
) -> list[PolicyRow]:
    """Every policy of `service` (ConfigError if mesh.yaml has none such), with the
    live split when known (`live_weights` None: as declared)."""
    spec = config.service(service)
    return [
        _timeout_row(config, spec),
        _retries_row(config, spec),
        _budget_row(spec),
        _limits_row(spec),
        _outlier_row(config, spec),
        _weights_row(spec, live_weights, live_known),
        _faults_row(spec),
        _rate_limit_row(spec),
    ]


# -- apply --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedAuthz:
    """The authz table `meshctl apply` wrote, and the one it replaced."""

    rules: tuple[AuthzRule, ...]
    previous: tuple[AuthzRule, ...] | None  # None: etcd had none (each process: its mesh.yaml)

    @property
    def changed(self) -> bool:
        return self.previous != self.rules


async def apply_authz(config: MeshConfig, etcd: EtcdClient) -> AppliedAuthz:
    """Write `config`'s authz table (mesh.yaml, just validated) as the live one: every
    instance and the control plane watch the key and apply it within a second."""
    key = authz_key(config.etcd.prefix)
    raw = await etcd.get(key)
    previous: tuple[AuthzRule, ...] | None = None
    if raw is not None:
        try:
            previous = decode_authz(raw)
        except ValueError:
            previous = None  # a malformed table, which every reader ignored
    await etcd.put(key, encode_authz(config.authz))
    return AppliedAuthz(config.authz, previous)
