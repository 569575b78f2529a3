"""mesh.config: defaults, the dotted key of every validation error, path resolution,
services' own settings, and the JSON Schema of the runtime's part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ConfigDict, Field, StrictInt
from pydantic.dataclasses import dataclass

from mesh.cli import SCHEMA_FILE
from mesh.cli import main as meshctl
from mesh.config import (
    ADMIN_IDENTITY,
    CONTROLPLANE_IDENTITY,
    LOG_LEVELS,
    BreakerPolicy,
    ClientPolicy,
    EtcdSettings,
    NoSettings,
    RetryPolicy,
    ServerSettings,
    ServiceSpec,
    TelemetrySettings,
    load_config,
    mesh_schema,
    parse_config,
    validate_settings,
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

    assert config.all_identities() == ("b", "a", ADMIN_IDENTITY, CONTROLPLANE_IDENTITY, "ci")


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


@pytest.mark.parametrize("level", ["verbose", "", "inf0"])
def test_an_unknown_log_level_is_refused_naming_the_key(level: str) -> None:
    error = config_error(minimal(telemetry={"log_level": level}))

    assert error.key == "telemetry.log_level"
    assert all(known in error.problem for known in LOG_LEVELS)


@pytest.mark.parametrize(("written", "level"), [("WARNING", "warning"), ("Debug", "debug")])
def test_log_levels_are_read_in_any_case(tmp_path: Path, written: str, level: str) -> None:
    config = parse_config(minimal(telemetry={"log_level": written}), tmp_path / "mesh.yaml")

    assert config.telemetry.log_level == level


def test_meshctl_exits_2_naming_a_bad_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(minimal(telemetry={"log_level": "verbose"})))

    code = meshctl(["--config", str(path), "status"])

    assert code == 2
    assert "telemetry.log_level" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"services": {"shop": {"replicas": 0}}}, "must be at least 1, got 0"),
        ({"services": {"shop": {"port": 70000}}}, "must be at most 65535, got 70000"),
        (minimal(colour="blue"), "unknown setting"),
        (minimal(client={"timeout": "fast"}), "must be a number, got str 'fast'"),
        (minimal(mesh={"dataplane": "envoy"}), "must be 'direct' or 'sidecar', got 'envoy'"),
        (minimal(mesh={"namespace": "A"}), "lowercase letters, digits, '-', got 'A'"),
        ({"mesh": {}}, "required"),
    ],
)
def test_problems_read_as_a_sentence_about_the_key(document: object, problem: str) -> None:
    assert config_error(document).problem == problem


def test_an_error_repeats_little_of_a_long_value() -> None:
    error = config_error(minimal(client={"timeout": "x" * 10_000}))

    assert error.key == "client.timeout"
    assert len(str(error)) < 100


def test_a_key_holds_list_indexes_and_mapping_keys() -> None:
    rules = [{"callers": ["*"], "methods": ["*"]}, {"callers": [7], "methods": ["*"]}]

    assert config_error(minimal(authz=rules)).key == "authz[1].callers[0]"
    assert config_error({"services": {"shop": {"settings": 3}}}).key == "services.shop.settings"


def test_sections_written_empty_take_their_defaults(tmp_path: Path) -> None:
    config = parse_config(minimal(client=None, etcd=None), tmp_path / "mesh.yaml")

    assert config.client == ClientPolicy()
    assert config.etcd == EtcdSettings()


def test_the_mesh_types_validate_when_code_builds_them() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- services' own settings ------------------------------------------------------------


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Limits:
    """A service's settings model, as a service declares one."""

    burst: StrictInt = Field(default=1, ge=1)


def test_a_services_settings_are_free_form_to_the_runtime(tmp_path: Path) -> None:
    settings = {"anything": [1, {"nested": True}]}

    config = parse_config({"services": {"shop": {"settings": settings}}}, tmp_path / "m.yaml")

    assert config.service("shop").settings == settings


def test_a_services_model_reads_its_settings() -> None:
    spec = ServiceSpec("shop", "services.shop", settings={"burst": 4})

    assert validate_settings(spec, Limits) == Limits(burst=4)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"burst": 0}, "services.shop.settings.burst"),
        ({"bursts": 2}, "services.shop.settings.bursts"),
    ],
)
def test_a_bad_setting_of_a_service_is_named_in_full(settings: dict[str, int], key: str) -> None:
    spec = ServiceSpec("shop", "services.shop", settings=settings)

    with pytest.raises(ConfigError) as caught:
        validate_settings(spec, Limits)

    assert caught.value.key == key


def test_a_service_without_settings_refuses_any() -> None:
    spec = ServiceSpec("shop", "services.shop", settings={"colour": "blue"})

    with pytest.raises(ConfigError) as caught:
        validate_settings(spec, NoSettings)

    assert (caught.value.key, caught.value.problem) == (
        "services.shop.settings.colour",
        "unknown setting",
    )
    assert validate_settings(ServiceSpec("shop", "services.shop"), NoSettings) == NoSettings()


# -- the JSON Schema of the runtime's part ----------------------------------------------

RUNTIME_SCHEMA = jsonschema.Draft202012Validator(mesh_schema())


def test_the_runtime_schema_is_a_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(RUNTIME_SCHEMA.schema)
    assert RUNTIME_SCHEMA.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_repositorys_mesh_yaml_validates_against_the_runtime_schema() -> None:
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())

    assert [error.message for error in RUNTIME_SCHEMA.iter_errors(document)] == []


def test_the_repositorys_mesh_yaml_names_the_schema_file_meshctl_up_writes() -> None:
    first_line = (REPO / "mesh.yaml").read_text().splitlines()[0]
    modeline, _, schema = first_line.partition("$schema=")

    assert modeline == "# yaml-language-server: "
    assert REPO / schema == load_config(REPO / "mesh.yaml").state_dir / SCHEMA_FILE


@pytest.mark.parametrize(
    "document",
    [
        minimal(colour="blue"),
        minimal(client={"retry": {"max_tries": 2}}),
        {"services": {"shop": {"replicas": True}}},
        {"services": {"shop": {"port": 70000}}},
        {"services": {"Shop": {}}},
        {"services": {}},
        minimal(client={"retry": {"jitter": 1.5}}),
        minimal(telemetry={"log_level": "verbose"}),
        minimal(telemetry={"trace_sample_ratio": 1.5}),
        minimal(mesh={"dataplane": "envoy"}),
        minimal(mesh={"trust_domain": "shop..local"}),
        minimal(etcd={"prefix": "shopmesh"}),
        minimal(identities=["Not_OK"]),
        minimal(authz=[{"methods": ["*"]}]),
        minimal(authz=[{"callers": ["admin", ""], "methods": ["*"]}]),
    ],
)
def test_the_runtime_schema_refuses_what_loading_refuses(document: dict[str, Any]) -> None:
    config_error(document)

    assert not RUNTIME_SCHEMA.is_valid(document)
