"""mesh.authz.AuthzTable: the allow-list and identity checks."""

from __future__ import annotations

import pytest

from mesh.authz import AuthzTable
from mesh.config import AuthzRule

DOMAIN, NAMESPACE = "shop.local", "default"
GET_PRODUCT = "/shop.product.v1.ProductService/GetProduct"
CREATE_PRODUCT = "/shop.product.v1.ProductService/CreateProduct"
GET_STOCK = "/shop.inventory.v1.InventoryService/GetStock"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def spiffe(name: str, domain: str = DOMAIN, namespace: str = NAMESPACE) -> str:
    return f"spiffe://{domain}/ns/{namespace}/sa/{name}"


@pytest.fixture
def table() -> AuthzTable:
    return AuthzTable(
        [
            AuthzRule(callers=("order",), methods=("shop.product.v1.ProductService/GetProduct",)),
            AuthzRule(callers=("reporting",), methods=("shop.inventory.v1.InventoryService/*",)),
            AuthzRule(callers=("admin",), methods=("*",)),
            AuthzRule(callers=("*",), methods=("grpc.health.v1.Health/*",)),
        ],
        DOMAIN,
        NAMESPACE,
    )


@pytest.mark.parametrize(
    ("caller", "method"),
    [
        ("order", GET_PRODUCT),
        ("reporting", GET_STOCK),
        ("reporting", "/shop.inventory.v1.InventoryService/AdjustStock"),
        ("admin", CREATE_PRODUCT),
        ("admin", "/any.Service/Anything"),
        ("order", HEALTH_CHECK),
        ("someone-new", HEALTH_CHECK),
    ],
    ids=[
        "exact",
        "service wildcard",
        "service wildcard 2",
        "any method",
        "any method 2",
        "any caller",
        "any caller, unlisted identity",
    ],
)
def test_listed_pairs_are_allowed(table: AuthzTable, caller: str, method: str) -> None:
    decision = table.check(spiffe(caller), method)

    assert decision.allowed
    assert decision.caller == spiffe(caller)


@pytest.mark.parametrize(
    ("caller", "method"),
    [
        ("order", CREATE_PRODUCT),
        ("order", GET_STOCK),
        ("reporting", GET_PRODUCT),
        ("stranger", GET_PRODUCT),
    ],
)
def test_unlisted_pairs_are_denied(table: AuthzTable, caller: str, method: str) -> None:
    assert not table.check(spiffe(caller), method).allowed


def test_a_service_wildcard_does_not_match_a_longer_service_name() -> None:
    table = AuthzTable(
        [AuthzRule(callers=("order",), methods=("shop.Product/*",))], DOMAIN, NAMESPACE
    )

    assert table.check(spiffe("order"), "/shop.Product/Get").allowed
    assert not table.check(spiffe("order"), "/shop.ProductAdmin/Get").allowed


@pytest.mark.parametrize("uri", [None, ""])
def test_a_caller_without_spiffe_id_is_denied(table: AuthzTable, uri: str | None) -> None:
    decision = table.check(uri, HEALTH_CHECK)

    assert not decision.allowed
    assert decision.caller == "<none>"


@pytest.mark.parametrize(
    "uri",
    [
        spiffe("admin", domain="evil.example"),
        spiffe("admin", namespace="staging"),
        "spiffe://shop.local/ns/default/admin",
        "https://shop.local/ns/default/sa/admin",
        "spiffe://shop.local/ns/default/sa/admin/x",
    ],
    ids=["other trust domain", "other namespace", "no sa", "wrong scheme", "extra segment"],
)
def test_outsiders_and_malformed_ids_are_denied_even_for_wildcards(
    table: AuthzTable, uri: str
) -> None:
    decision = table.check(uri, HEALTH_CHECK)

    assert not decision.allowed
    assert decision.caller == uri


def test_the_method_may_come_with_or_without_leading_slash(table: AuthzTable) -> None:
    assert table.check(spiffe("order"), GET_PRODUCT).allowed
    assert table.check(spiffe("order"), GET_PRODUCT.lstrip("/")).allowed
    assert not table.check(spiffe("order"), CREATE_PRODUCT.lstrip("/")).allowed


def test_decisions_differ_per_caller_and_method(table: AuthzTable) -> None:
    first = table.check(spiffe("order"), GET_PRODUCT)
    other_method = table.check(spiffe("order"), CREATE_PRODUCT)
    other_caller = table.check(spiffe("admin"), GET_PRODUCT)
    assert first.allowed
    assert not other_method.allowed
    assert other_caller.allowed
    assert other_caller.caller == spiffe("admin")


def test_an_empty_table_denies_everyone() -> None:
    table = AuthzTable([], DOMAIN, NAMESPACE)

    assert not table.check(spiffe("admin"), HEALTH_CHECK).allowed
