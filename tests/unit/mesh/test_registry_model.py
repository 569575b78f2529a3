"""mesh.registry Endpoint: its JSON form in etcd, and set membership."""

from __future__ import annotations

import json

import pytest

from mesh.registry import Endpoint, instance_key, service_prefix, services_root

ENDPOINT = Endpoint(
    service="inventory",
    instance_id="inventory-1a2b",
    address="127.0.0.1:50061",
    version="v2",
    metadata={"metrics": "127.0.0.1:9111", "pid": "42"},
)


def test_json_round_trip() -> None:
    assert Endpoint.from_json(ENDPOINT.to_json()) == ENDPOINT


def test_json_uses_the_registry_field_names() -> None:
    data = json.loads(ENDPOINT.to_json())

    assert data == {
        "service": "inventory",
        "id": "inventory-1a2b",
        "address": "127.0.0.1:50061",
        "version": "v2",
        "metadata": {"metrics": "127.0.0.1:9111", "pid": "42"},
    }


def test_version_and_metadata_are_optional() -> None:
    raw = b'{"service": "product", "id": "p-1", "address": "127.0.0.1:1"}'

    endpoint = Endpoint.from_json(raw)

    assert endpoint.version == "v1"
    assert dict(endpoint.metadata) == {}


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null", b"not json", b""])
def test_from_json_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        Endpoint.from_json(raw)


@pytest.mark.parametrize("missing", ["service", "id", "address"])
def test_from_json_rejects_missing_keys(missing: str) -> None:
    data = json.loads(ENDPOINT.to_json())
    del data[missing]

    with pytest.raises(ValueError):  # noqa: PT011
        Endpoint.from_json(json.dumps(data).encode())


@pytest.mark.parametrize("metadata", [5, [1, 2]])
def test_from_json_rejects_malformed_metadata_with_value_error(metadata: object) -> None:
    data = {**json.loads(ENDPOINT.to_json()), "metadata": metadata}

    with pytest.raises(ValueError):  # noqa: PT011
        Endpoint.from_json(json.dumps(data).encode())


def test_endpoints_differing_in_metadata_are_unequal_but_share_a_set() -> None:
    other = Endpoint(
        ENDPOINT.service,
        ENDPOINT.instance_id,
        ENDPOINT.address,
        ENDPOINT.version,
        metadata={"metrics": "127.0.0.1:9999"},
    )

    assert other != ENDPOINT
    assert hash(other) == hash(ENDPOINT)
    assert len({ENDPOINT, other}) == 2
    assert frozenset({ENDPOINT}) != frozenset({other})


def test_keys_nest_under_the_prefix() -> None:
    assert services_root("/shopmesh") == "/shopmesh/services/"
    assert service_prefix("/shopmesh", "inventory") == "/shopmesh/services/inventory/"
    assert instance_key("/shopmesh", "inventory", "i-1") == "/shopmesh/services/inventory/i-1"
    assert not instance_key("/shopmesh", "inventory-v2", "i-1").startswith(
        service_prefix("/shopmesh", "inventory")
    )
