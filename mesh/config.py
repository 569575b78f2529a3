"""mesh.yaml, validated once at an entrypoint against pydantic models.

Each section of the file is a frozen pydantic dataclass below, with every default and
every rule on its fields and a docstring per field: pydantic turns those into the JSON
Schema that `meshctl config schema` prints and editors show (`mesh_schema()`). They
are dataclasses rather than BaseModels so that code builds them like plain ones
(positionally, `dataclasses.replace`), each construction validated too.

Unknown keys and bad values fail loading with a ConfigError naming the dotted key, e.g.
`services.inventory.replicas` or `authz[1].callers`. Relative paths in the file are
relative to the file's own folder.

`services.<name>.settings` belongs to the service: to the runtime it is a free-form
mapping, which the instance checks against the service's own model when it starts
(`validate_settings`), naming keys the same way (`services.product.settings...`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, core_schema

from mesh.errors import ConfigError

__all__ = [
    "ADMIN_IDENTITY",
    "BROKERS",
    "CONTROLPLANE_IDENTITY",
    "DATAPLANES",
    "EDGE_IDENTITY",
    "FAULT_STATUSES",
    "JSON_SCHEMA_DIALECT",
    "LOG_LEVELS",
    "MAX_FAULT_DELAY_MS",
    "METHOD_NAME",
    "USER_METADATA_KEY",
    "AuthzRule",
    "BreakerPolicy",
    "ClientPolicy",
    "ConnectionLimits",
    "ControlPlaneSettings",
    "EtcdSettings",
    "EventsSettings",
    "FaultPolicy",
    "Matches",
    "MeshConfig",
    "MeshDocument",
    "MeshSection",
    "MethodFault",
    "NoSettings",
    "OutlierPolicy",
    "RateLimitPolicy",
    "RetryBudget",
    "RetryPolicy",
    "RouteRetries",
    "ServerSettings",
    "ServiceSection",
    "ServiceSpec",
    "TelemetrySettings",
    "TrafficPolicy",
    "load_config",
    "mesh_schema",
    "parse_config",
    "settings_schema",
    "validate_settings",
]

_Dataplane = Literal["direct", "sidecar"]
DATAPLANES: tuple[str, ...] = get_args(_Dataplane)
"""The values of mesh.dataplane this version knows."""

_Broker = Literal["nats", "rabbitmq"]
BROKERS: tuple[str, ...] = get_args(_Broker)
"""The values of events.broker this version knows."""

_LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_LEVELS: tuple[str, ...] = get_args(_LogLevel)
"""The values of telemetry.log_level (read in any case)."""

ADMIN_IDENTITY = "admin"
"""The identity people and tools (meshctl, grpcurl) use; it always gets a certificate."""

CONTROLPLANE_IDENTITY = "controlplane"
EDGE_IDENTITY = "edge"
"""The REST edge's identity (the service `edge`): services believe the end user it
names in a call's metadata from it alone (mesh.server.Caller)."""
USER_METADATA_KEY = "x-shop-user"
"""Metadata key of the end user's id (a verified token's `sub`), as the edge sends it."""
"""The xDS control plane's identity: sidecars accept config only from it."""

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_T = TypeVar("_T")
_SECTION = ConfigDict(extra="forbid", use_attribute_docstrings=True)
# An error repeats at most this many characters of a bad value, and of each key.
_SHOWN = 48
_KEY_SHOWN = 128


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


@dataclasses.dataclass(frozen=True)
class Matches:
    """`Annotated[str, Matches(pattern, rule)]`: a string that `pattern` matches whole,
    refused with `rule` as the message; the JSON Schema gets the pattern."""

    pattern: re.Pattern[str]
    rule: str

    def check(self, value: str) -> str:
        if self.pattern.fullmatch(value) is None:
            raise ValueError(f"{self.rule}, got {_shown(value)}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.schema_pattern
        return json_schema

    @property
    def schema_pattern(self) -> str:
        """The pattern, anchored for JSON Schema (whose patterns match anywhere)."""
        return f"^(?:{self.pattern.pattern})$"


_NAME = Matches(re.compile(r"[a-z][a-z0-9-]{0,62}"), "lowercase letters, digits, '-'")
_Name = Annotated[StrictStr, _NAME]
# Lowercase DNS labels joined by dots: the trust domain is also the suffix of the DNS
# name each workload certificate carries (mesh.identity).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_TrustDomain = Annotated[
    StrictStr, Matches(re.compile(rf"{_LABEL}(\.{_LABEL})*"), "lowercase DNS labels joined by '.'")
]
_Port = Annotated[StrictInt, Field(ge=0, le=65535)]


def _empty_if_none(value: object) -> object:
    """A section written with nothing under it (`client:`) is YAML null: all defaults."""
    return {} if value is None else value


_NONE_IS_EMPTY = BeforeValidator(_empty_if_none)


@dataclass(frozen=True, config=_SECTION)
class RetryPolicy:
    """Retries of UNAVAILABLE on idempotent methods only (see the protos), with
    exponential backoff and jitter. A failure a dependency answered (DependencyFailed)
    is never retried: each hop retries only its own calls."""

    max_attempts: StrictInt = Field(default=3, ge=1)
    """Attempts per call, the first one included."""
    initial_backoff: StrictFloat = Field(default=0.05, ge=0)
    """Seconds before the first retry."""
    max_backoff: StrictFloat = Field(default=1.0, ge=0)
    """Seconds any backoff is capped at."""
    multiplier: StrictFloat = Field(default=2.0, ge=1)
    """How much each backoff grows over the one before."""
    jitter: StrictFloat = Field(default=0.2, ge=0, le=1)
    """Share of each backoff that is random."""
    per_try_timeout: StrictFloat = Field(default=2.0, ge=0.001)
    """Seconds one attempt of an idempotent call may take before it is given up and
    tried on another endpoint (a hung instance costs a call this, not its deadline);
    also the least time an attempt must have had for its DEADLINE_EXCEEDED to count
    against the endpoint's breaker."""


@dataclass(frozen=True, config=_SECTION)
class BreakerPolicy:
    """A per-endpoint breaker: counts only failures that say the endpoint is unhealthy,
    never one the request caused."""

    failure_threshold: StrictInt = Field(default=5, ge=1)
    """Consecutive failures that open it."""
    reset_timeout: StrictFloat = Field(default=10.0, ge=0.01)
    """Seconds before one trial call may pass."""


@dataclass(frozen=True, config=_SECTION)
class ClientPolicy:
    """The proxyless mesh client, in every service: how it calls other services."""

    timeout: StrictFloat = Field(default=5.0, ge=0.001)
    """Seconds: the deadline of a call with none to inherit."""
    connect_timeout: StrictFloat = Field(default=2.0, ge=0.1)
    """Seconds a new connection (TCP and TLS handshake) gets at least before it counts
    as failed (grpc gives an attempt its reconnect backoff when that is longer, up to
    about 1.2 s): long enough for a busy instance, and, kept below `timeout`, short
    enough that a call can still go to another instance."""
    retry: Annotated[RetryPolicy, _NONE_IS_EMPTY] = RetryPolicy()
    breaker: Annotated[BreakerPolicy, _NONE_IS_EMPTY] = BreakerPolicy()


@dataclass(frozen=True, config=_SECTION)
class ControlPlaneSettings:
    """The xDS control plane that `meshctl up` starts when `mesh.dataplane` is
    "sidecar": it serves every Envoy its config, built from mesh.yaml and etcd."""

    port: _Port = 15010
    """Its ADS port (gRPC over mTLS); 0: any free port, kept across its restarts."""


@dataclass(frozen=True, config=_SECTION)
class RetryBudget:
    """Retries a service's callers may add, as Linkerd budgets them: a share of the
    requests plus a floor per second, so retries never multiply an overload."""

    percent: StrictFloat = Field(default=20.0, ge=0, le=100)
    """Retries in flight, as a share of requests in flight."""
    min_retries_per_second: StrictInt = Field(default=10, ge=0)
    """Retries allowed whatever the share (Envoy: concurrent retries allowed)."""


@dataclass(frozen=True, config=_SECTION)
class RouteRetries:
    """Retries of calls to the service: UNAVAILABLE, reset and connect-failure on
    idempotent methods; connect-failure (the call never left) on every method. Unset
    values are the `client.retry` section's, on both data planes."""

    attempts: StrictInt | None = Field(default=None, ge=1)
    """Attempts per call, the first one included (default: client.retry.max_attempts)."""
    per_try_timeout: StrictFloat | None = Field(default=None, ge=0.001)
    """Seconds one attempt of an idempotent call may take before it is retried
    (default: client.retry.per_try_timeout)."""
    budget: Annotated[RetryBudget, _NONE_IS_EMPTY] = RetryBudget()


@dataclass(frozen=True, config=_SECTION)
class ConnectionLimits:
    """Envoy's circuit breakers on each caller's sidecar, per upstream version."""

    max_connections: StrictInt = Field(default=1024, ge=1)
    max_pending_requests: StrictInt = Field(default=1024, ge=1)
    max_requests: StrictInt = Field(default=1024, ge=1)
    """Requests in flight to the service (its versions each) from one sidecar."""


@dataclass(frozen=True, config=_SECTION)
class OutlierPolicy:
    """Ejection of an instance that keeps failing (gRPC UNAVAILABLE, INTERNAL... count as
    5xx), as Envoy's defaults, but with a ceiling that can eject one of two hosts."""

    consecutive_failures: StrictInt = Field(default=5, ge=1)
    interval: StrictFloat = Field(default=10.0, ge=0.01)
    """Seconds between ejection sweeps."""
    base_ejection_time: StrictFloat = Field(default=30.0, ge=0.01)
    """Seconds an ejected instance stays out (times the number of its ejections)."""
    max_ejection_percent: StrictInt = Field(default=50, ge=0, le=100)
    """Most instances of a version ejected at once (Envoy's 10% ejects none of two)."""


@dataclass(frozen=True, config=_SECTION)
class FaultPolicy:
    """Faults the service's own sidecar injects into calls to it; off until switched on
    at run time (`/runtime_modify?fault.abort_percent=50`, say, on its admin)."""

    delay_ms: StrictInt = Field(default=100, ge=0)
    """Delay of a delayed call (runtime key fault.delay_ms)."""
    delay_percent: StrictInt = Field(default=0, ge=0, le=100)
    """Share of calls delayed (runtime key fault.delay_percent)."""
    abort_percent: StrictInt = Field(default=0, ge=0, le=100)
    """Share of calls aborted (runtime key fault.abort_percent)."""
    abort_grpc_status: StrictInt = Field(default=14, ge=1, le=16)
    """gRPC status of an aborted call, 14 UNAVAILABLE by default
    (runtime key fault.abort_grpc_status)."""


_FaultStatus = Literal[
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
]  # fmt: skip
FAULT_STATUSES: tuple[str, ...] = get_args(_FaultStatus)
"""The gRPC code names an injected failure may have: every one but OK."""
MAX_FAULT_DELAY_MS = 60_000
"""The longest injected delay: a minute, far beyond any call's deadline here."""


def _fault_status(value: object) -> object:
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    if name == "OK":
        raise ValueError("OK is no failure: name another gRPC code, e.g. UNAVAILABLE")
    return name


@dataclass(frozen=True, config=_SECTION)
class MethodFault:
    """Faults every instance of a service injects into calls of one of its methods,
    before the handler runs, on both data planes: a share of the calls fails with
    `status`, a share waits `delay_ms` first (never past the call's deadline). The two
    are drawn apart: a call may be delayed, then fail."""

    fail_percent: StrictFloat = Field(default=0.0, ge=0, le=100)
    """Share of calls that fail, in percent."""
    status: Annotated[_FaultStatus, BeforeValidator(_fault_status)] = "UNAVAILABLE"
    """gRPC status of a failed call: a code name other than OK (any case)."""
    delay_ms: StrictInt = Field(default=0, ge=0, le=MAX_FAULT_DELAY_MS)
    """Milliseconds a delayed call waits before its handler runs."""
    delay_percent: StrictFloat = Field(default=100.0, ge=0, le=100)
    """Share of calls delayed, in percent (every call, unless given, once delay_ms is)."""

    @property
    def injects(self) -> bool:
        """Whether it fails or delays any call at all."""
        return self.fail_percent > 0 or (self.delay_ms > 0 and self.delay_percent > 0)


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
METHOD_NAME = Matches(
    re.compile(rf"{_IDENT}|{_IDENT}(\.{_IDENT})*/{_IDENT}"),
    "a method's name, e.g. Charge or shop.payment.v1.PaymentService/Charge",
)
"""How faults name a method: its short RPC name, or "pkg.Service/Method"."""
_MethodName = Annotated[StrictStr, METHOD_NAME]


def _faults_by_method(value: object) -> object:
    """`faults:` written as a list of entries that each name their `method`, as the
    mapping by method it stands for; None (`faults:` alone) is no fault."""
    if value is None:
        return {}
    if not isinstance(value, list):
        return value
    by_method: dict[object, object] = {}
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("method"), str):
            raise ValueError(
                f"entry {index} names no method, e.g. {{method: Charge, fail_percent: 30}}"
            )
        fields = {key: item for key, item in entry.items() if key != "method"}
        if entry["method"] in by_method:
            raise ValueError(f"entry {index}: {_shown(entry['method'])} is listed twice")
        by_method[entry["method"]] = fields
    return by_method


class _MappingOrList:
    """The JSON Schema of `faults:`: the mapping by method, or the list of entries that
    each name their `method` beside a MethodFault's keys."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        mapping = handler(schema)  # {"patternProperties": {<method name>: <fault's $ref>}}
        ((pattern, fault_ref),) = mapping["patternProperties"].items()
        fault = handler.resolve_ref_schema(fault_ref)
        entry = {
            "type": "object",
            "properties": {
                "method": {"type": "string", "pattern": pattern},
                **fault["properties"],
            },
            "required": ["method"],
            "additionalProperties": False,
        }
        return {
            "anyOf": [
                {**mapping, "additionalProperties": False},  # a bad name matches no pattern
                {"type": "array", "items": entry},
            ]
        }


@dataclass(frozen=True, config=_SECTION)
class RateLimitPolicy:
    """A token bucket on the service's own sidecar, shared by all its callers; declared
    off (runtime keys ratelimit.enabled and ratelimit.enforced, in percent)."""

    tokens_per_second: StrictInt = Field(default=100, ge=1)
    burst: StrictInt = Field(default=200, ge=1)
    """Bucket size: calls that may arrive at once."""
    enabled_percent: StrictInt = Field(default=0, ge=0, le=100)
    """Share of calls the bucket sees (alone: shadow mode, counted, never refused)."""
    enforced_percent: StrictInt = Field(default=0, ge=0, le=100)
    """Share of over-limit calls refused (UNAVAILABLE) rather than only counted."""


@dataclass(frozen=True, config=_SECTION)
class TrafficPolicy:
    """How the service's callers reach it. Both data planes apply what they can from
    this one declaration; `meshctl policy <service>` says which applies what."""

    timeout: StrictFloat | None = Field(default=None, ge=0.001)
    """Seconds: deadline of a call with none to inherit (default: client.timeout)."""
    retries: Annotated[RouteRetries, _NONE_IS_EMPTY] = RouteRetries()
    limits: Annotated[ConnectionLimits, _NONE_IS_EMPTY] = ConnectionLimits()
    outlier: Annotated[OutlierPolicy, _NONE_IS_EMPTY] = OutlierPolicy()
    weights: dict[_Name, Annotated[StrictInt, Field(ge=0)]] | None = None
    """Share of calls per version, e.g. {v1: 90, v2: 10} (default: by replicas);
    `meshctl traffic` changes it at run time."""
    faults: Annotated[FaultPolicy, _NONE_IS_EMPTY] = FaultPolicy()
    rate_limit: Annotated[RateLimitPolicy, _NONE_IS_EMPTY] = RateLimitPolicy()

    @model_validator(mode="after")
    def _some_weight(self) -> TrafficPolicy:
        if self.weights is not None and not any(self.weights.values()):
            raise ValueError("weights: at least one version needs a weight above 0")
        return self


@dataclass(frozen=True, config=_SECTION)
class ServerSettings:
    """How an instance stops: deregister, keep serving `drain_delay` s, then give
    in-flight calls `grace_period` s."""

    drain_delay: StrictFloat = Field(default=1.0, ge=0)
    """Seconds an instance keeps serving after deregistering."""
    grace_period: StrictFloat = Field(default=10.0, ge=0)
    """Seconds in-flight calls get to finish on SIGTERM."""


def _without_trailing_slash(value: str) -> str:
    return value.rstrip("/")  # "/" itself becomes "": keys then start at /services/


@dataclass(frozen=True, config=_SECTION)
class EtcdSettings:
    """The registry. An empty `endpoint` means meshctl runs an embedded etcd."""

    endpoint: StrictStr = ""
    """host:port of an etcd to use; empty: meshctl up starts one."""
    client_port: _Port = 2379
    """The embedded etcd's client port."""
    prefix: Annotated[
        StrictStr,
        Matches(re.compile("/.*"), "must start with '/'"),
        AfterValidator(_without_trailing_slash),
    ] = "/shopmesh"
    """Instances register at <prefix>/services/<name>/<id>; a trailing '/' is dropped."""
    lease_ttl: StrictInt = Field(default=5, ge=1)
    """Seconds: a crashed instance leaves the registry within this."""


@dataclass(frozen=True, config=_SECTION)
class EventsSettings:
    """The event bus (mesh.events): services publish domain events to it and consume
    them with durable, at-least-once, per-consumer ordered subscriptions. An empty
    `endpoint` means meshctl runs an embedded broker."""

    broker: _Broker = "nats"
    """Which broker and adapter: "nats" (NATS JetStream, which meshctl up can run
    embedded) or "rabbitmq" (RabbitMQ 3.9+ streams, which meshctl up does not embed:
    it needs an `endpoint`, or making a bus fails)."""
    endpoint: StrictStr = ""
    """host:port of a broker to use (rabbitmq: or an amqp:// URL with credentials);
    empty: meshctl up starts one (nats only)."""
    port: _Port = 4222
    """The embedded broker's client port; 0: any free port, kept across its restarts."""


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True, config=_SECTION)
class TelemetrySettings:
    """Tracing and logs."""

    trace_sample_ratio: StrictFloat = Field(default=0.01, ge=0, le=1)
    """Share of calls without a caller's trace that start one (head sampling, decided at
    the first server). A caller's W3C traceparent always decides for itself."""
    log_level: Annotated[_LogLevel, BeforeValidator(_lowercase)] = "info"
    """Least level of the log lines an instance writes (any case)."""


@dataclass(frozen=True, config=_SECTION)
class MeshSection:
    """The mesh as a whole: identities, where it listens, where it keeps its files."""

    trust_domain: _TrustDomain = "shop.local"
    """Identities are spiffe://<trust_domain>/ns/<namespace>/sa/<name>."""
    namespace: _Name = "default"
    host: StrictStr = "127.0.0.1"
    """Every listener binds here."""
    dataplane: _Dataplane = "direct"
    """How instances reach each other: "direct" (the proxyless mesh client, mTLS end to
    end) or "sidecar" (each instance behind its own Envoy, fed by the control plane)."""
    state_dir: StrictStr = ".mesh"
    """Logs, traces, databases, embedded etcd data, state.json (relative to the file)."""
    certs_dir: StrictStr = "certs"
    """ca.crt, <identity>.crt and .key (relative to the file)."""


@dataclass(frozen=True, config=_SECTION)
class ServiceSection:
    """One service: which module runs it, how many instances meshctl starts, on which
    ports, and the service's own settings."""

    module: StrictStr | None = None
    """Module run as `python -m`; default services.<name> ('-' as '_')."""
    replicas: StrictInt = Field(default=1, ge=1)
    """Instances meshctl starts; instance <name>-n listens on port + n - 1."""
    version: _Name = "v1"
    """Registered with each instance."""
    versions: dict[_Name, Annotated[StrictInt, Field(ge=1)]] | None = None
    """Instances per version, e.g. {v1: 2, v2: 1}, instead of `replicas` and `version`."""
    port: _Port = 0
    """gRPC port of the first instance; 0: any free port."""
    metrics_port: _Port = 0
    """Prometheus port of the first instance; 0: any free port."""
    envoy_admin_port: _Port = 0
    """Envoy admin port of the first instance's sidecar (with `dataplane: sidecar`);
    0: any free port."""
    settings: Annotated[dict[StrictStr, Any], _NONE_IS_EMPTY] = Field(default_factory=dict)
    """The service's own settings, checked by the service when it starts (`python -m
    <module> --settings-schema` prints their schema)."""
    policy: Annotated[TrafficPolicy, _NONE_IS_EMPTY] = TrafficPolicy()
    """How callers reach the service: timeouts, retries, limits, outlier detection,
    version weights, faults and rate limit."""
    faults: Annotated[
        dict[_MethodName, Annotated[MethodFault, _NONE_IS_EMPTY]],
        BeforeValidator(_faults_by_method),
        _MappingOrList(),
    ] = Field(default_factory=dict)
    """Faults the instances inject per method of their own gRPC services, on both data
    planes, e.g. {Charge: {fail_percent: 30, status: UNAVAILABLE}}, or a list of such
    entries that each name their `method`; `meshctl fault` overrides a method's at run
    time. (`policy.faults` is the sidecar's, for every method at once.)"""

    @model_validator(mode="before")
    @classmethod
    def _versions_alone(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and "versions" in data
            and data.keys() & {"replicas", "version"}
        ):
            raise ValueError("give either versions or replicas and version, not both")
        return data

    @model_validator(mode="after")
    def _weights_of_running_versions(self) -> ServiceSection:
        if self.versions is not None and not self.versions:
            raise ValueError("versions: must name at least one version")
        weights = self.policy.weights
        running = self.instances_per_version
        if weights is not None and not set(weights) <= set(running):
            unknown = ", ".join(sorted(set(weights) - set(running)))
            raise ValueError(f"policy.weights: no instances of {unknown}")
        return self

    @property
    def instances_per_version(self) -> dict[str, int]:
        return dict(self.versions) if self.versions else {self.version: self.replicas}


def _all_non_empty(values: tuple[str, ...]) -> tuple[str, ...]:
    if not all(values):
        raise ValueError("must be a list of non-empty strings")
    return values


def _all_names(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if _NAME.pattern.fullmatch(value) is None:
            raise ValueError(f"{_shown(value)}: {_NAME.rule}")
    return values


# Lists whose items are checked as a whole, so that an error names the list; the
# item's rule is in the schema only.
_NonEmptyStrings = Annotated[
    tuple[Annotated[StrictStr, WithJsonSchema({"type": "string", "minLength": 1})], ...],
    AfterValidator(_all_non_empty),
]
_Names = Annotated[
    tuple[
        Annotated[StrictStr, WithJsonSchema({"type": "string", "pattern": _NAME.schema_pattern})],
        ...,
    ],
    AfterValidator(_all_names),
]


@dataclass(
    frozen=True, config=_SECTION | {"json_schema_extra": {"required": ["callers", "methods"]}}
)
class AuthzRule:
    """`callers` (identity names, or "*": any identity of this mesh) may call `methods`
    ("pkg.Service/Method", "pkg.Service/*" or "*"). Everything else is denied."""

    # Both are required: checked after the fields, so that an error names the rule
    # (`authz[1]`); the schema says so directly.
    callers: _NonEmptyStrings = Field(default=(), json_schema_extra={"minItems": 1})
    methods: _NonEmptyStrings = Field(default=(), json_schema_extra={"minItems": 1})

    @model_validator(mode="after")
    def _needs_both(self) -> AuthzRule:
        if not self.callers or not self.methods:
            raise ValueError("needs non-empty callers and methods")
        return self


@dataclass(frozen=True, config=_SECTION)
class MeshDocument:
    """mesh.yaml: the one configuration file of a ShopMesh mesh, read by meshctl and by
    every service instance."""

    services: dict[_Name, Annotated[ServiceSection, _NONE_IS_EMPTY]] = Field(
        min_length=1, json_schema_extra={"additionalProperties": False}
    )
    """Each service of the mesh by name: lowercase letters, digits, '-'."""
    mesh: Annotated[MeshSection, _NONE_IS_EMPTY] = MeshSection()
    etcd: Annotated[EtcdSettings, _NONE_IS_EMPTY] = EtcdSettings()
    server: Annotated[ServerSettings, _NONE_IS_EMPTY] = ServerSettings()
    client: Annotated[ClientPolicy, _NONE_IS_EMPTY] = ClientPolicy()
    telemetry: Annotated[TelemetrySettings, _NONE_IS_EMPTY] = TelemetrySettings()
    controlplane: Annotated[ControlPlaneSettings, _NONE_IS_EMPTY] = ControlPlaneSettings()
    events: Annotated[EventsSettings, _NONE_IS_EMPTY] = EventsSettings()
    identities: _Names = ()
    """Identities that get a certificate besides each service's and admin's."""
    authz: tuple[AuthzRule, ...] = ()
    """Who may call what; the first rule that names the caller and the method allows."""


@dataclass(frozen=True, config=_SECTION)
class NoSettings:
    """The settings of a service that takes none: any key is refused."""


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """One service as the runtime uses it: its section of mesh.yaml, with its name and
    module.

    Instance n (from 0) listens on `port + n`, serves metrics on `metrics_port + n` and
    its sidecar's admin on `envoy_admin_port + n`; a port of 0 means any free port.
    """

    name: str
    module: str
    replicas: int = ServiceSection.replicas
    version: str = ServiceSection.version
    port: int = ServiceSection.port
    metrics_port: int = ServiceSection.metrics_port
    envoy_admin_port: int = ServiceSection.envoy_admin_port
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The service's own settings as written; its instances check them with the
    service's model (`validate_settings`)."""
    versions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Instances per version, in mesh.yaml's order (default: `version`: `replicas`)."""
    policy: TrafficPolicy = dataclasses.field(default_factory=TrafficPolicy)
    faults: Mapping[str, MethodFault] = dataclasses.field(default_factory=dict)
    """Faults per method, by the name mesh.yaml gives it (short or full)."""

    @property
    def running_versions(self) -> Mapping[str, int]:
        return self.versions or {self.version: self.replicas}

    def declared_weights(self) -> dict[str, int]:
        """Share of calls per version as declared: `policy.weights`, else by replicas."""
        weights = self.policy.weights
        if weights is None:
            return dict(self.running_versions)
        return {version: weights.get(version, 0) for version in self.running_versions}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The whole of mesh.yaml as the runtime uses it: the `mesh:` section's settings at
    the top, paths resolved against the file's folder."""

    path: Path
    trust_domain: str = MeshSection.trust_domain
    dataplane: str = MeshSection.dataplane
    namespace: str = MeshSection.namespace
    host: str = MeshSection.host
    state_dir: Path = Path(MeshSection.state_dir)
    certs_dir: Path = Path(MeshSection.certs_dir)
    etcd: EtcdSettings = dataclasses.field(default_factory=EtcdSettings)
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    client: ClientPolicy = dataclasses.field(default_factory=ClientPolicy)
    telemetry: TelemetrySettings = dataclasses.field(default_factory=TelemetrySettings)
    controlplane: ControlPlaneSettings = dataclasses.field(default_factory=ControlPlaneSettings)
    events: EventsSettings = dataclasses.field(default_factory=EventsSettings)
    services: Mapping[str, ServiceSpec] = dataclasses.field(default_factory=dict)
    identities: tuple[str, ...] = ()
    authz: tuple[AuthzRule, ...] = ()

    @property
    def root(self) -> Path:
        return self.path.parent

    def service(self, name: str) -> ServiceSpec:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError("services", f"no service {name!r} (known: {known})") from None

    def all_identities(self) -> tuple[str, ...]:
        """Every identity that gets a certificate: each service, admin, the control
        plane, then the extra ones."""
        return tuple(
            dict.fromkeys([*self.services, ADMIN_IDENTITY, CONTROLPLANE_IDENTITY, *self.identities])
        )


# -- errors ----------------------------------------------------------------------------

_KINDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
"""What a value of the wrong type should have been, by pydantic's error type."""


def _described(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {_shown(value)}"


def _problem(error: ErrorDetails) -> str:
    """One pydantic error as the rest of a `key: problem` line."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind in _KINDS:
        return f"must be {_KINDS[kind]}, got {_described(value)}"
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le")}
    if kind in bounds:
        words, bound = bounds[kind]
        return f"must be {words} {ctx[bound]}, got {_shown(value)}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return "unknown setting"
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return "must not be empty"  # the only minimum length the models set
    if kind == "too_long":
        unit = "characters" if ctx.get("field_type") == "String" else "items"
        return f"must have at most {ctx['max_length']} {unit}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {_shown(value)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}, got {_shown(value)}"
    if kind == "value_error":  # a rule of ours: its message says it all
        return str(ctx["error"])
    return error["msg"]


def _dotted(loc: tuple[str | int, ...]) -> str:
    """pydantic's location of an error as a dotted key: `authz[1].callers`; a mapping's
    key (followed by "[key]" when the key itself is wrong) is always `.name`."""
    key = ""
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        names_a_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        if isinstance(part, int) and not names_a_key:
            key += f"[{part}]"
        else:
            text = str(part)
            text = text if len(text) <= _KEY_SHOWN else text[: _KEY_SHOWN - 3] + "..."
            key += f".{text}" if key else text
    return key


def _config_error(error: ValidationError, *within: str) -> ConfigError:
    """The first problem pydantic found, naming its key (under the keys `within`)."""
    details = error.errors(include_url=False)
    first = details[0]
    problem = _problem(first)
    if len(details) > 1:
        problem += f" (and {len(details) - 1} more)"
    return ConfigError(_dotted((*within, *first["loc"])), problem)


# -- loading ---------------------------------------------------------------------------

_DOCUMENT = TypeAdapter(MeshDocument)


def _service(name: str, section: ServiceSection) -> ServiceSpec:
    versions = section.instances_per_version
    return ServiceSpec(
        name=name,
        module=section.module or f"services.{name.replace('-', '_')}",
        replicas=sum(versions.values()),
        version=next(iter(versions)),
        port=section.port,
        metrics_port=section.metrics_port,
        envoy_admin_port=section.envoy_admin_port,
        settings=section.settings,
        versions=versions,
        policy=section.policy,
        faults=section.faults,
    )


def _resolve(document: MeshDocument, path: Path) -> MeshConfig:
    mesh = document.mesh
    return MeshConfig(
        path=path,
        trust_domain=mesh.trust_domain,
        dataplane=mesh.dataplane,
        namespace=mesh.namespace,
        host=mesh.host,
        state_dir=path.parent / mesh.state_dir,
        certs_dir=path.parent / mesh.certs_dir,
        etcd=document.etcd,
        server=document.server,
        client=document.client,
        telemetry=document.telemetry,
        controlplane=document.controlplane,
        events=document.events,
        services={name: _service(name, s) for name, s in document.services.items()},
        identities=document.identities,
        authz=document.authz,
    )


def parse_config(document: object, path: Path) -> MeshConfig:
    """Build a MeshConfig from an already-parsed YAML document.

    Raises:
        ConfigError: naming the dotted key of the first bad setting.
    """
    try:
        parsed = _DOCUMENT.validate_python(_empty_if_none(document))
    except ValidationError as error:
        raise _config_error(error) from error
    return _resolve(parsed, path.resolve())


def load_config(path: Path) -> MeshConfig:
    """Read and validate mesh.yaml at `path`."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError("", f"cannot read {path}: {error.strerror}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("", f"{path} is not valid YAML: {error}") from error
    return parse_config(document, path)


def validate_settings(spec: ServiceSpec, model: type[_T]) -> _T:
    """`spec`'s own settings (`services.<name>.settings`) as an instance of `model`, a
    pydantic model or dataclass.

    Raises:
        ConfigError: naming the full dotted key, `services.<name>.settings.<...>`.
    """
    try:
        return TypeAdapter(model).validate_python(spec.settings)
    except ValidationError as error:
        raise _config_error(error, "services", spec.name, "settings") from error


# -- JSON Schema -----------------------------------------------------------------------


def settings_schema(model: type[Any]) -> dict[str, Any]:
    """The JSON Schema of a service's settings model, on its own."""
    return {"$schema": JSON_SCHEMA_DIALECT, **TypeAdapter(model).json_schema()}


def mesh_schema(service_settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON Schema of mesh.yaml: the runtime's part, and for each service named in
    `service_settings` its `settings` schema (as `settings_schema` gives it)."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **_DOCUMENT.json_schema()}
    services = schema["properties"]["services"]
    (entry,) = services["patternProperties"].values()  # {"$ref": ServiceSection's}
    definitions = schema.setdefault("$defs", {})
    services["properties"] = {
        name: {**entry, "properties": {"settings": _embedded(name, settings, definitions)}}
        for name, settings in (service_settings or {}).items()
    }
    return schema


def _embedded(
    service: str, schema: Mapping[str, Any], definitions: dict[str, Any]
) -> dict[str, Any]:
    """A standalone `schema` as a subschema of the mesh's: its own definitions move to
    `definitions` as `<service>.<name>`, and its references follow them."""
    own = schema.get("$defs", {})
    moved = {f"#/$defs/{name}": f"#/$defs/{service}.{name}" for name in own}
    for name, definition in own.items():
        definitions[f"{service}.{name}"] = _retargeted(definition, moved)
    embedded: dict[str, Any] = _retargeted(
        {key: value for key, value in schema.items() if key not in ("$schema", "$defs")}, moved
    )
    return embedded


def _retargeted(node: Any, moved: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: moved.get(value, value)
            if key == "$ref" and isinstance(value, str)
            else _retargeted(value, moved)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_retargeted(item, moved) for item in node]
    return node
