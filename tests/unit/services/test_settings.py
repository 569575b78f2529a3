"""Each service's own settings in mesh.yaml: its model reads the repo's file, names a bad
key in full, and its schema fits into the mesh's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.edge import EdgeSettings
from mesh.config import (
    ServiceSpec,
    load_config,
    mesh_schema,
    settings_schema,
    validate_settings,
)
from mesh.errors import ConfigError
from services.auth.settings import AuthSettings
from services.common.money import Money
from services.inventory.settings import InventorySettings
from services.order.settings import OrderSettings
from services.payment.settings import PaymentSettings
from services.product.settings import DemoProduct, ProductSettings
from services.shipping.settings import ShippingSettings
from services.user.settings import UserSettings

REPO = Path(__file__).resolve().parents[3]
MODELS: dict[str, type[Any]] = {
    "product": ProductSettings,
    "inventory": InventorySettings,
    "order": OrderSettings,
    "auth": AuthSettings,
    "edge": EdgeSettings,
    "payment": PaymentSettings,
    "shipping": ShippingSettings,
    "user": UserSettings,
}


def repo_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "mesh.yaml").read_text())
    return document


def settings_error(tmp_path: Path, service: str, settings: object) -> ConfigError:
    document = repo_document()
    document["services"][service]["settings"] = settings
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(document))
    spec = load_config(tmp_path / "mesh.yaml").service(service)
    with pytest.raises(ConfigError) as caught:
        validate_settings(spec, MODELS[service])
    return caught.value


def test_the_repositorys_settings_hold_the_demo_data() -> None:
    config = load_config(REPO / "mesh.yaml")

    product = validate_settings(config.service("product"), ProductSettings)
    inventory = validate_settings(config.service("inventory"), InventorySettings)

    ids = [demo.product_id for demo in product.demo_products]
    assert ids == ["sku-espresso", "sku-grinder", "sku-mug"]
    assert set(inventory.opening_stock) == set(ids)
    assert inventory.opening_stock["sku-espresso"] == 40
    assert validate_settings(config.service("order"), OrderSettings) == OrderSettings()


@pytest.mark.parametrize(
    ("price", "parts"),
    [
        ("24.50 USD", ("USD", 24, 500_000_000)),
        ("12 EUR", ("EUR", 12, 0)),
        ("0.000000001 JPY", ("JPY", 0, 1)),
    ],
)
def test_a_demo_price_splits_into_currency_units_and_nanos(
    price: str, parts: tuple[str, int, int]
) -> None:
    demo = DemoProduct(product_id="sku-a", name="A", price=price)

    assert demo.price_parts == parts


@pytest.mark.parametrize(
    ("demo", "key"),
    [
        (
            {"product_id": "sku-a", "name": "A", "price": "24,50 USD"},
            "services.product.settings.demo_products[1].price",
        ),
        (
            {"product_id": "SKU A", "name": "A", "price": "1 USD"},
            "services.product.settings.demo_products[1].product_id",
        ),
        (
            {"product_id": "sku-a", "name": "", "price": "1 USD"},
            "services.product.settings.demo_products[1].name",
        ),
        (
            {"product_id": "sku-a", "name": "A", "price": "1 USD", "stock": 4},
            "services.product.settings.demo_products[1].stock",
        ),
        ({"product_id": "sku-a", "name": "A"}, "services.product.settings.demo_products[1].price"),
    ],
    ids=["price", "product id", "name", "unknown key", "missing price"],
)
def test_a_bad_demo_product_is_named_in_full(
    tmp_path: Path, demo: dict[str, object], key: str
) -> None:
    good = {"product_id": "sku-b", "name": "B", "price": "2.00 USD"}

    assert settings_error(tmp_path, "product", {"demo_products": [good, demo]}).key == key


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"opening_stock": {"sku-mug": -1}}, "services.inventory.settings.opening_stock.sku-mug"),
        ({"opening_stock": {"sku-mug": "4"}}, "services.inventory.settings.opening_stock.sku-mug"),
        ({"opening_stock": {"Mug": 4}}, "services.inventory.settings.opening_stock.Mug"),
        ({"opening_stok": {}}, "services.inventory.settings.opening_stok"),
    ],
)
def test_bad_opening_stock_is_named_in_full(
    tmp_path: Path, settings: dict[str, object], key: str
) -> None:
    assert settings_error(tmp_path, "inventory", settings).key == key


def test_a_setting_for_a_service_that_takes_none_is_refused(tmp_path: Path) -> None:
    error = settings_error(tmp_path, "order", {"demo_products": []})

    assert (error.key, error.problem) == (
        "services.order.settings.demo_products",
        "unknown setting",
    )


def own_settings_error(service: str, settings: dict[str, object]) -> ConfigError:
    """The error of `settings` for `service`, whether or not mesh.yaml has the service."""
    spec = ServiceSpec(name=service, module=f"services.{service}", settings=settings)
    with pytest.raises(ConfigError) as caught:
        validate_settings(spec, MODELS[service])
    return caught.value


def test_payment_and_shipping_fail_nothing_by_default() -> None:
    payment = validate_settings(ServiceSpec("payment", "services.payment"), PaymentSettings)
    shipping = validate_settings(ServiceSpec("shipping", "services.shipping"), ShippingSettings)

    assert (payment.decline.customers, payment.decline.share, payment.delay_ms) == ((), 0.0, 0)
    assert (shipping.step_seconds, shipping.delay_ms) == (5.0, 0)
    assert (shipping.fail.order_ids, shipping.fail.countries, shipping.fail.share) == ((), (), 0.0)


def test_the_failure_knobs_are_read() -> None:
    payment = validate_settings(
        ServiceSpec(
            "payment",
            "services.payment",
            settings={"decline": {"customers": ["mallory"], "share": 1}, "delay_ms": 250},
        ),
        PaymentSettings,
    )
    shipping = validate_settings(
        ServiceSpec(
            "shipping",
            "services.shipping",
            settings={"step_seconds": 0.2, "fail": {"order_ids": ["ord-x"], "countries": ["AQ"]}},
        ),
        ShippingSettings,
    )

    assert (payment.decline.customers, payment.decline.share, payment.delay_ms) == (
        ("mallory",),
        1.0,
        250,
    )
    assert (shipping.step_seconds, shipping.fail.order_ids, shipping.fail.countries) == (
        0.2,
        ("ord-x",),
        ("AQ",),
    )


@pytest.mark.parametrize(
    ("service", "settings", "key"),
    [
        ("payment", {"decline": {"share": 1.5}}, "services.payment.settings.decline.share"),
        ("payment", {"decline": {"share": "0.5"}}, "services.payment.settings.decline.share"),
        ("payment", {"decline": {"customers": ["-x"]}},
         "services.payment.settings.decline.customers[0]"),
        ("payment", {"delay_ms": -1}, "services.payment.settings.delay_ms"),
        ("payment", {"delay_ms": 600_000}, "services.payment.settings.delay_ms"),
        ("payment", {"declines": {}}, "services.payment.settings.declines"),
        ("shipping", {"step_seconds": 0}, "services.shipping.settings.step_seconds"),
        ("shipping", {"fail": {"countries": ["XX"]}},
         "services.shipping.settings.fail.countries[0]"),
        ("shipping", {"fail": {"countries": ["de"]}},
         "services.shipping.settings.fail.countries[0]"),
        ("shipping", {"fail": {"order_ids": ["Order 1"]}},
         "services.shipping.settings.fail.order_ids[0]"),
        ("shipping", {"fail": {"share": -0.1}}, "services.shipping.settings.fail.share"),
        ("shipping", {"fail": {"customers": []}}, "services.shipping.settings.fail.customers"),
    ],
)  # fmt: skip
def test_a_bad_failure_knob_is_named_in_full(
    service: str, settings: dict[str, object], key: str
) -> None:
    assert own_settings_error(service, settings).key == key


# -- the mesh's schema with every service's settings ------------------------------------

SCHEMA = mesh_schema({name: settings_schema(model) for name, model in MODELS.items()})
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_the_repositorys_mesh_yaml_validates_against_the_whole_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)

    assert [error.message for error in VALIDATOR.iter_errors(repo_document())] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["services", "product", "settings", "demo_products", 0, "price"], "24,50"),
        (["services", "product", "settings", "demo_products", 0, "stock"], 40),
        (["services", "inventory", "settings", "opening_stock", "sku-mug"], -1),
        (["services", "inventory", "settings", "opening_stock", "Mug"], 1),
        (["services", "order", "settings", "colour"], "blue"),
    ],
)
def test_the_whole_schema_finds_a_bad_setting_of_a_service(
    path: list[str | int], value: object
) -> None:
    document = copy.deepcopy(repo_document())
    parent: Any = document
    for step in path[:-1]:
        parent = parent.setdefault(step, {}) if isinstance(step, str) else parent[step]
    parent[path[-1]] = value

    assert not VALIDATOR.is_valid(document)


@pytest.mark.parametrize(
    ("service", "settings", "valid"),
    [
        ("payment", {"decline": {"customers": ["mallory"], "share": 0.1}, "delay_ms": 5}, True),
        ("payment", {"decline": {"share": 2}}, False),
        ("shipping", {"step_seconds": 0.5, "fail": {"countries": ["AQ"]}}, True),
        ("shipping", {"step_seconds": -1}, False),
        ("shipping", {"fail": {"countries": ["aq"]}}, False),
    ],
)
def test_the_whole_schema_checks_payment_and_shipping_settings(
    service: str, settings: dict[str, object], valid: bool
) -> None:
    document = copy.deepcopy(repo_document())
    document["services"][service] = {"port": 0, "metrics_port": 0, "settings": settings}

    assert VALIDATOR.is_valid(document) is valid


def test_a_card_limit_is_an_amount_with_its_currency(tmp_path: Path) -> None:
    payment = validate_settings(
        ServiceSpec("payment", "services.payment", settings={"decline": {"over": "500.00 USD"}}),
        PaymentSettings,
    )
    assert payment.decline.policy().over == Money("USD", 500, 0)

    error = settings_error(tmp_path, "payment", {"decline": {"over": "500 dollars"}})
    assert "decline.over" in str(error)
    assert "500.00 USD" in str(error)
