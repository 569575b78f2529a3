"""mesh.config: defaults, the dotted key of every validation error, path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.config import (
    ADMIN_IDENTITY,
    BreakerPolicy,
    ClientPolicy,
    EtcdSettings,
    RetryPolicy,
    ServerSettings,
    TelemetrySettings,
    load_config,
    parse_config,
)
from mesh.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest valid document (one service), plus `sections`."""
    return {"services": {"shop": {}}, **sections}


def config_error(document: object, path: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, path or Path("/srv/mesh/mesh.yaml"))
    return caught.value


def test_defaults_fill_every_section_left_out(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path / "mesh.yaml")

    assert config.trust_domain == "shop.local"
    assert config.namespace == "default"
    assert config.host == "127.0.0.1"
    assert config.etcd == EtcdSettings()
    assert config.server == ServerSettings()
    assert config.client == ClientPolicy(retry=RetryPolicy(), breaker=BreakerPolicy())
    assert config.telemetry == TelemetrySettings()
    assert config.identities == ()
    assert config.authz == ()
    spec = config.service("shop")
    assert (spec.module, spec.replicas, spec.version, spec.port, spec.metrics_port) == (
        "services.shop",
        1,
        "v1",
        0,
        0,
    )


def test_default_module_replaces_dashes_in_the_service_name(tmp_path: Path) -> None:
    config = parse_config({"services": {"order-history": None}}, tmp_path / "mesh.yaml")

    assert config.service("order-history").module == "services.order_history"


def test_given_values_override_defaults(tmp_path: Path) -> None:
    document = minimal(
        client={"timeout": 2, "connect_timeout": 0.5, "retry": {"max_attempts": 5, "jitter": 0.5}},
        etcd={"prefix": "/other/", "lease_ttl": 9},
    )

    config = parse_config(document, tmp_path / "mesh.yaml")

    assert config.client.timeout == 2.0
    assert isinstance(config.client.timeout, float)
    assert config.client.connect_timeout == 0.5
    assert config.client.retry.max_attempts == 5
    assert config.client.retry.jitter == 0.5
    assert config.client.retry.initial_backoff == RetryPolicy().initial_backoff
    assert config.etcd.prefix == "/other"
    assert config.etcd.lease_ttl == 9


@pytest.mark.parametrize(
    ("document", "key"),
    [
        (minimal(colour="blue"), "colour"),
        (minimal(mesh={"trust_domian": "x"}), "mesh.trust_domian"),
        (minimal(client={"retry": {"max_tries": 2}}), "client.retry.max_tries"),
        (minimal(client={"breaker": {"threshold": 2}}), "client.breaker.threshold"),
        ({"services": {"shop": {"replica": 2}}}, "services.shop.replica"),
        (minimal(authz=[{"callers": ["a"], "methods": ["*"], "note": "x"}]), "authz[0].note"),
        (minimal(etcd={"host": "x"}), "etcd.host"),
    ],
    ids=["top", "mesh", "client.retry", "client.breaker", "service", "authz rule", "etcd"],
)
def test_unknown_keys_are_named_at_any_depth(document: object, key: str) -> None:
    assert config_error(document).key == key


@pytest.mark.parametrize(
    ("document", "key"),
    [
        (minimal(mesh={"trust_domain": 7}), "mesh.trust_domain"),
        (minimal(mesh=["not", "a", "mapping"]), "mesh"),
        (minimal(client={"timeout": "fast"}), "client.timeout"),
        (minimal(client={"retry": {"max_attempts": 2.5}}), "client.retry.max_attempts"),
        (minimal(telemetry={"log_level": 10}), "telemetry.log_level"),
        (minimal(identities="admin"), "identities"),
        (minimal(authz={"callers": ["a"]}), "authz"),
        ({"services": ["shop"]}, "services"),
    ],
)
def test_wrong_types_name_the_key(document: object, key: str) -> None:
    assert config_error(document).key == key


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"services": {"shop": {"replicas": True}}}, "services.shop.replicas"),
        (minimal(etcd={"lease_ttl": False}), "etcd.lease_ttl"),
        (
            minimal(client={"breaker": {"failure_threshold": True}}),
            "client.breaker.failure_threshold",
        ),
        (minimal(client={"timeout": True}), "client.timeout"),
    ],
)
def test_a_bool_is_not_a_number(document: object, key: str) -> None:
    assert config_error(document).key == key


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"services": {"shop": {"port": -1}}}, "services.shop.port"),
        ({"services": {"shop": {"metrics_port": 70000}}}, "services.shop.metrics_port"),
        (minimal(etcd={"client_port": -5}), "etcd.client_port"),
        ({"services": {"shop": {"replicas": 0}}}, "services.shop.replicas"),
        (minimal(etcd={"lease_ttl": 0}), "etcd.lease_ttl"),
        (minimal(client={"retry": {"max_attempts": 0}}), "client.retry.max_attempts"),
        (minimal(client={"retry": {"multiplier": 0.5}}), "client.retry.multiplier"),
        (minimal(client={"retry": {"jitter": 1.5}}), "client.retry.jitter"),
        (minimal(client={"timeout": 0}), "client.timeout"),
        (minimal(client={"connect_timeout": 0.01}), "client.connect_timeout"),
        (minimal(server={"grace_period": -1}), "server.grace_period"),
        (minimal(telemetry={"trace_sample_ratio": 1.5}), "telemetry.trace_sample_ratio"),
    ],
)
def test_out_of_range_numbers_name_the_key(document: object, key: str) -> None:
    assert config_error(document).key == key


def test_jitter_of_exactly_one_is_allowed(tmp_path: Path) -> None:
    config = parse_config(minimal(client={"retry": {"jitter": 1}}), tmp_path / "mesh.yaml")

    assert config.client.retry.jitter == 1.0


@pytest.mark.parametrize("name", ["Shop", "shop_cart", "9lives", "-shop", "a" * 64])
def test_bad_service_names_are_rejected(name: str) -> None:
    assert config_error({"services": {name: {}}}).key == f"services.{name}"


@pytest.mark.parametrize(
    ("mesh", "key"),
    [
        ({"trust_domain": "Shop.Local"}, "mesh.trust_domain"),
        ({"trust_domain": "shop..local"}, "mesh.trust_domain"),
        ({"trust_domain": "shop_local"}, "mesh.trust_domain"),
        ({"trust_domain": "shop.local."}, "mesh.trust_domain"),
        ({"namespace": "Default"}, "mesh.namespace"),
        ({"namespace": "a.b"}, "mesh.namespace"),
    ],
)
def test_names_that_cannot_be_dns_labels_are_rejected(mesh: dict[str, str], key: str) -> None:
    """The trust domain and namespace end every workload certificate's DNS name."""
    assert config_error(minimal(mesh=mesh)).key == key


def test_a_multi_label_trust_domain_is_accepted(tmp_path: Path) -> None:
    config = parse_config(minimal(mesh={"trust_domain": "eu-1.shop.example"}), tmp_path / "m.yaml")
    assert config.trust_domain == "eu-1.shop.example"


def test_a_document_without_services_is_rejected() -> None:
    assert config_error({"mesh": {"namespace": "x"}}).key == "services"
    assert config_error(None).key == "services"


def test_bad_identity_names_are_rejected() -> None:
    assert config_error(minimal(identities=["ok", "Not_OK"])).key == "identities"


@pytest.mark.parametrize(
    "rule",
    [
        {"methods": ["*"]},
        {"callers": [], "methods": ["*"]},
        {"callers": ["admin"]},
        {"callers": ["admin"], "methods": []},
    ],
    ids=["no callers", "empty callers", "no methods", "empty methods"],
)
def test_an_authz_rule_needs_callers_and_methods(rule: dict[str, Any]) -> None:
    document = minimal(authz=[{"callers": ["*"], "methods": ["*"]}, rule])

    assert config_error(document).key == "authz[1]"


def test_authz_callers_must_be_non_empty_strings() -> None:
    document = minimal(authz=[{"callers": ["admin", ""], "methods": ["*"]}])

    assert config_error(document).key == "authz[0].callers"


def test_authz_rules_are_kept_in_order(tmp_path: Path) -> None:
    document = minimal(
        authz=[
            {"callers": ["*"], "methods": ["grpc.health.v1.Health/*"]},
            {"callers": ["admin", "order"], "methods": ["*"]},
        ]
    )

    config = parse_config(document, tmp_path / "mesh.yaml")

    assert [rule.callers for rule in config.authz] == [("*",), ("admin", "order")]
    assert config.authz[0].methods == ("grpc.health.v1.Health/*",)


@pytest.mark.parametrize("prefix", ["shopmesh", "shopmesh/", ""])
def test_etcd_prefix_needs_a_leading_slash(prefix: str) -> None:
    assert config_error(minimal(etcd={"prefix": prefix})).key == "etcd.prefix"


def test_etcd_prefix_of_just_a_slash_is_the_root(tmp_path: Path) -> None:
    config = parse_config(minimal(etcd={"prefix": "/"}), tmp_path / "mesh.yaml")

    assert config.etcd.prefix == ""


def test_relative_dirs_resolve_against_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    document = minimal(mesh={"state_dir": "run/state", "certs_dir": "../pki"})

    config = parse_config(document, folder / "mesh.yaml")

    assert config.state_dir == folder.resolve() / "run" / "state"
    assert config.certs_dir == folder.resolve() / ".." / "pki"
    assert config.root == folder.resolve()


def test_default_dirs_live_next_to_the_file(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path / "mesh.yaml")

    assert config.state_dir == tmp_path.resolve() / ".mesh"
    assert config.certs_dir == tmp_path.resolve() / "certs"


def test_absolute_dirs_are_kept(tmp_path: Path) -> None:
    document = minimal(mesh={"state_dir": str(tmp_path / "abs")})

    config = parse_config(document, Path("/elsewhere/mesh.yaml"))

    assert config.state_dir == tmp_path / "abs"


def test_relative_config_path_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    config = parse_config(minimal(), Path("mesh.yaml"))

    assert config.path == tmp_path.resolve() / "mesh.yaml"
    assert config.certs_dir == tmp_path.resolve() / "certs"


@pytest.mark.parametrize(
    ("services", "identities"),
    [
        ({"shop": {}}, []),
        ({"shop": {}}, ["admin", "ci"]),
        ({"admin": {}, "shop": {}}, ["admin"]),
    ],
)
def test_all_identities_contains_admin_once(
    tmp_path: Path, services: dict[str, Any], identities: list[str]
) -> None:
    config = parse_config({"services": services, "identities": identities}, tmp_path / "x.yaml")

    names = config.all_identities()

    assert names.count(ADMIN_IDENTITY) == 1
    assert set(services) <= set(names)
    assert set(identities) <= set(names)
    assert len(names) == len(set(names))


def test_all_identities_lists_services_first(tmp_path: Path) -> None:
    document = {"services": {"b": {}, "a": {}}, "identities": ["ci"]}

    config = parse_config(document, tmp_path / "mesh.yaml")

    assert config.all_identities() == ("b", "a", ADMIN_IDENTITY, "ci")


def test_unknown_service_lookup_raises_config_error(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path / "mesh.yaml")

    with pytest.raises(ConfigError) as caught:
        config.service("nope")

    assert caught.value.key == "services"


def test_load_config_reads_yaml_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  shop:\n    replicas: 3\nclient:\n  timeout: 1.5\n")

    config = load_config(path)

    assert config.service("shop").replicas == 3
    assert config.client.timeout == 1.5
    assert config.path == path.resolve()


def test_load_config_of_a_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.yaml")


def test_load_config_of_invalid_yaml_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services: [unclosed\n")

    with pytest.raises(ConfigError):
        load_config(path)


def test_the_repositorys_mesh_yaml_loads() -> None:
    config = load_config(REPO / "mesh.yaml")

    assert {"product", "inventory", "order"} <= set(config.services)
    assert config.root == REPO
    assert config.authz
    assert ADMIN_IDENTITY in config.all_identities()
