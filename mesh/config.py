"""mesh.yaml, parsed once at an entrypoint into frozen dataclasses.

Every default lives in the dataclass fields below. Unknown keys and bad values fail
loading with a ConfigError naming the dotted key, e.g. `services.inventory.replicas`.
Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mesh.errors import ConfigError

__all__ = [
    "ADMIN_IDENTITY",
    "DATAPLANES",
    "AuthzRule",
    "BreakerPolicy",
    "ClientPolicy",
    "DemoProduct",
    "EtcdSettings",
    "MeshConfig",
    "RetryPolicy",
    "ServerSettings",
    "ServiceSpec",
    "TelemetrySettings",
    "load_config",
    "parse_config",
]

DATAPLANES = ("direct",)
"""The values of mesh.dataplane this version knows."""

ADMIN_IDENTITY = "admin"
"""The identity people and tools (meshctl, grpcurl) use; it always gets a certificate."""

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Lowercase DNS labels joined by dots: the trust domain is also the suffix of the DNS
# name each workload certificate carries (mesh.identity).
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE on idempotent methods, with exponential backoff and jitter."""

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.2
    per_try_timeout: float = 2.0
    """Seconds one attempt of an idempotent call may take before it is given up and
    tried on another endpoint (a hung instance costs a call this, not its deadline);
    also the least time an attempt must have had for its DEADLINE_EXCEEDED to count
    against the endpoint's breaker."""


@dataclass(frozen=True)
class BreakerPolicy:
    """A per-endpoint breaker: opens after `failure_threshold` consecutive failures."""

    failure_threshold: int = 5
    reset_timeout: float = 10.0


@dataclass(frozen=True)
class ClientPolicy:
    """How the mesh client calls other services."""

    timeout: float = 5.0
    connect_timeout: float = 2.0
    """Seconds a new connection (TCP and TLS handshake) gets at least before it counts
    as failed (grpc gives an attempt its reconnect backoff when that is longer, up to
    about 1.2 s): long enough for a busy instance, and, kept below `timeout`, short
    enough that a call can still go to another instance."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(frozen=True)
class ServerSettings:
    """How an instance stops: deregister, keep serving `drain_delay` s, then give
    in-flight calls `grace_period` s."""

    drain_delay: float = 1.0
    grace_period: float = 10.0


@dataclass(frozen=True)
class EtcdSettings:
    """The registry. An empty `endpoint` means meshctl runs an embedded etcd."""

    endpoint: str = ""
    client_port: int = 2379
    prefix: str = "/shopmesh"
    lease_ttl: int = 5


@dataclass(frozen=True)
class TelemetrySettings:
    trace_sample_ratio: float = 0.01
    log_level: str = "info"


@dataclass(frozen=True)
class ServiceSpec:
    """One service: which module runs it and how many instances meshctl starts.

    Instance n (from 0) listens on `port + n` and serves metrics on `metrics_port + n`;
    a port of 0 means any free port.
    """

    name: str
    module: str
    replicas: int = 1
    version: str = "v1"
    port: int = 0
    metrics_port: int = 0


@dataclass(frozen=True)
class AuthzRule:
    """`callers` (identity names, or "*") may call `methods` ("pkg.Service/Method",
    "pkg.Service/*" or "*")."""

    callers: tuple[str, ...]
    methods: tuple[str, ...]


_PRICE = re.compile(r"^(\d{1,15})(?:\.(\d{1,9}))? ([A-Z]{3})$")


@dataclass(frozen=True)
class DemoProduct:
    """A demo product: the product service creates it and the inventory service gives
    it its opening stock, each in its own database, when missing."""

    product_id: str
    name: str
    price: str  # "<amount> <ISO 4217 code>", e.g. "24.50 USD"
    stock: int

    @property
    def price_parts(self) -> tuple[str, int, int]:
        """(currency code, whole units, nanos) of the price."""
        match = _PRICE.match(self.price)
        assert match is not None, "validated when the config was loaded"
        units, fraction, currency = match.groups()
        return currency, int(units), int((fraction or "").ljust(9, "0"))


@dataclass(frozen=True)
class MeshConfig:
    """The whole of mesh.yaml."""

    path: Path
    trust_domain: str = "shop.local"
    dataplane: str = "direct"
    """How instances reach each other: "direct" (the proxyless mesh client, mTLS end to
    end); the sidecar data plane comes with the Envoy issue."""
    namespace: str = "default"
    host: str = "127.0.0.1"
    state_dir: Path = Path(".mesh")
    certs_dir: Path = Path("certs")
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    client: ClientPolicy = field(default_factory=ClientPolicy)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    identities: tuple[str, ...] = ()
    authz: tuple[AuthzRule, ...] = ()
    demo_products: tuple[DemoProduct, ...] = ()

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
        """Every identity that gets a certificate: each service, admin, then the extra ones."""
        return tuple(dict.fromkeys([*self.services, ADMIN_IDENTITY, *self.identities]))


class _Reader:
    """Typed access to one mapping of the YAML document, naming keys on error."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"must be a mapping, got {type(data).__name__}")
        self._data: Mapping[str, Any] = data
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        if not name:
            return self._path
        return f"{self._path}.{name}" if self._path else name

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def typed(self, name: str, kind: type[_T], default: _T) -> _T:
        value = self.raw(name)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(
                self.key(name), f"must be {kind.__name__}, got {type(value).__name__} {value!r}"
            )
        return value

    def at_least(self, name: str, kind: type[_T], default: _T, minimum: float) -> _T:
        value = self.typed(name, kind, default)
        if value < minimum:  # type: ignore[operator]
            raise ConfigError(self.key(name), f"must be at least {minimum}, got {value!r}")
        return value

    def port(self, name: str, default: int) -> int:
        value = self.at_least(name, int, default, 0)
        if value > 65535:
            raise ConfigError(self.key(name), f"must be a port number, got {value}")
        return value

    def names(self, name: str, default: Sequence[str]) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return tuple(default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self.key(name), "must be a list of non-empty strings")
        return tuple(value)

    def section(self, name: str) -> _Reader:
        return _Reader(self.raw(name), self.key(name))

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown setting")


def _numbers(reader: _Reader, cls: type[_T], minimums: Mapping[str, float]) -> _T:
    """A dataclass of numbers: each field read with its default's type and a minimum."""
    defaults = cls()
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        default = getattr(defaults, f.name)
        values[f.name] = reader.at_least(f.name, type(default), default, minimums.get(f.name, 0))
    reader.finish()
    return cls(**values)


def _client(reader: _Reader) -> ClientPolicy:
    retry = _numbers(
        reader.section("retry"),
        RetryPolicy,
        {"max_attempts": 1, "multiplier": 1, "per_try_timeout": 0.001},
    )
    breaker = _numbers(
        reader.section("breaker"), BreakerPolicy, {"failure_threshold": 1, "reset_timeout": 0.01}
    )
    timeout = reader.at_least("timeout", float, ClientPolicy.timeout, 0.001)
    connect_timeout = reader.at_least("connect_timeout", float, ClientPolicy.connect_timeout, 0.1)
    policy = ClientPolicy(
        timeout=timeout, connect_timeout=connect_timeout, retry=retry, breaker=breaker
    )
    reader.finish()
    if retry.jitter > 1:
        raise ConfigError(reader.key("retry.jitter"), "must be between 0 and 1")
    return policy


def _etcd(reader: _Reader) -> EtcdSettings:
    defaults = EtcdSettings()
    prefix = reader.typed("prefix", str, defaults.prefix)
    if not prefix.startswith("/"):
        raise ConfigError(reader.key("prefix"), f"must start with '/', got {prefix!r}")
    prefix = prefix.rstrip("/")  # "/" itself becomes "": keys then start at /services/
    settings = EtcdSettings(
        endpoint=reader.typed("endpoint", str, defaults.endpoint),
        client_port=reader.port("client_port", defaults.client_port),
        prefix=prefix,
        lease_ttl=reader.at_least("lease_ttl", int, defaults.lease_ttl, 1),
    )
    reader.finish()
    return settings


def _services(reader: _Reader) -> dict[str, ServiceSpec]:
    specs: dict[str, ServiceSpec] = {}
    for name, _ in reader.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                reader.key(str(name)), "service names are lowercase letters, digits, '-'"
            )
        entry = reader.section(name)
        specs[name] = ServiceSpec(
            name=name,
            module=entry.typed("module", str, f"services.{name.replace('-', '_')}"),
            replicas=entry.at_least("replicas", int, 1, 1),
            version=entry.typed("version", str, "v1"),
            port=entry.port("port", 0),
            metrics_port=entry.port("metrics_port", 0),
        )
        entry.finish()
    if not specs:
        raise ConfigError(reader.key(""), "declare at least one service")
    return specs


def _authz(raw: object, key: str) -> tuple[AuthzRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(key, "must be a list of {callers: [...], methods: [...]}")
    rules = []
    for index, item in enumerate(raw):
        entry = _Reader(item, f"{key}[{index}]")
        rule = AuthzRule(callers=entry.names("callers", ()), methods=entry.names("methods", ()))
        entry.finish()
        if not rule.callers or not rule.methods:
            raise ConfigError(entry.key(""), "needs non-empty callers and methods")
        rules.append(rule)
    return tuple(rules)


def _demo(reader: _Reader) -> tuple[DemoProduct, ...]:
    raw = reader.raw("products")
    if raw is None:
        reader.finish()
        return ()
    if not isinstance(raw, list):
        raise ConfigError(reader.key("products"), "must be a list")
    products = []
    for index, item in enumerate(raw):
        entry = _Reader(item, reader.key(f"products[{index}]"))
        product = DemoProduct(
            product_id=entry.typed("product_id", str, ""),
            name=entry.typed("name", str, ""),
            price=entry.typed("price", str, ""),
            stock=entry.at_least("stock", int, 0, 0),
        )
        entry.finish()
        if not _PRICE.match(product.price):
            raise ConfigError(
                entry.key("price"), f"must look like '24.50 USD', got {product.price!r}"
            )
        if not product.product_id or not product.name:
            raise ConfigError(entry.key(""), "needs product_id and name")
        products.append(product)
    reader.finish()
    return tuple(products)


def parse_config(document: object, path: Path) -> MeshConfig:
    """Build a MeshConfig from an already-parsed YAML document."""
    top = _Reader(document, "")
    mesh = top.section("mesh")
    defaults = MeshConfig(path=path)
    telemetry = top.section("telemetry")
    server = top.section("server")
    config = MeshConfig(
        path=path.resolve(),
        trust_domain=mesh.typed("trust_domain", str, defaults.trust_domain),
        dataplane=mesh.typed("dataplane", str, defaults.dataplane),
        namespace=mesh.typed("namespace", str, defaults.namespace),
        host=mesh.typed("host", str, defaults.host),
        state_dir=path.resolve().parent / mesh.typed("state_dir", str, str(defaults.state_dir)),
        certs_dir=path.resolve().parent / mesh.typed("certs_dir", str, str(defaults.certs_dir)),
        etcd=_etcd(top.section("etcd")),
        server=ServerSettings(
            drain_delay=server.at_least("drain_delay", float, ServerSettings.drain_delay, 0),
            grace_period=server.at_least("grace_period", float, ServerSettings.grace_period, 0),
        ),
        client=_client(top.section("client")),
        telemetry=TelemetrySettings(
            trace_sample_ratio=telemetry.at_least(
                "trace_sample_ratio", float, TelemetrySettings.trace_sample_ratio, 0
            ),
            log_level=telemetry.typed("log_level", str, "info"),
        ),
        services=_services(top.section("services")),
        identities=top.names("identities", defaults.identities),
        authz=_authz(top.raw("authz"), "authz"),
        demo_products=_demo(top.section("demo")),
    )
    for reader in (mesh, server, telemetry, top):
        reader.finish()
    if config.dataplane not in DATAPLANES:
        raise ConfigError(
            "mesh.dataplane", f"must be one of {', '.join(DATAPLANES)}, got {config.dataplane!r}"
        )
    if not _DOMAIN.match(config.trust_domain):
        raise ConfigError("mesh.trust_domain", "lowercase DNS labels joined by '.'")
    if not _NAME.match(config.namespace):
        raise ConfigError("mesh.namespace", "lowercase letters, digits, '-'")
    if config.telemetry.trace_sample_ratio > 1:
        raise ConfigError("telemetry.trace_sample_ratio", "must be between 0 and 1")
    for identity in config.identities:
        if not _NAME.match(identity):
            raise ConfigError("identities", f"{identity!r}: lowercase letters, digits, '-'")
    return config


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
