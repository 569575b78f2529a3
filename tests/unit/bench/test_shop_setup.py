"""The shop part's pure set-up: the driver's flags and estimate, its failures in the
exit code, the mesh.yaml it writes and the PlaceOrder request it sends."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from shop.order.v1 import order_pb2

from bench.driver import Settings, _parse, _shop_errors
from bench.shop import (
    CUSTOMER_ID,
    IDLE_ORDERS,
    QUICK_IDLE_ORDERS,
    SERVICES,
    SHIPPING_STEP_SECONDS,
    SHOP_CONCURRENCY,
    SHOP_SETUP,
    place_order_request,
    shop_document,
    shop_seconds,
)
from bench.shopmesh import PRODUCT_ID
from tests.unit.bench.factories import make_summary
from tests.unit.bench.shop_factories import make_shop

REPO = Path(__file__).resolve().parents[3]


def test_the_shop_part_runs_unless_told_not_to() -> None:
    assert _parse([])[1].shop is True
    assert _parse(["--no-shop"])[1].shop is False
    # The other parts' dev options run those parts alone.
    assert _parse(["--sidecar-only"])[1].shop is False
    assert _parse(["--edge-only"])[1].shop is False
    only = _parse(["--shop-only"])[1]
    assert (only.shop, only.shop_only, only.edge, only.sidecar) == (True, True, False, False)


def test_the_dev_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["--shop-only", "--edge-only"])

    assert "exclude each other" in capsys.readouterr().err


def test_quick_places_fewer_orders_one_at_a_time_and_the_in_flight_can_be_set() -> None:
    default = _parse([])[1]
    assert (default.shop_orders, default.shop_concurrency) == (IDLE_ORDERS, SHOP_CONCURRENCY)
    assert _parse(["--quick"])[1].shop_orders == QUICK_IDLE_ORDERS
    assert _parse(["--shop-concurrency", "2"])[1].shop_concurrency == 2
    with pytest.raises(SystemExit):
        _parse(["--shop-concurrency", "0"])


def test_the_estimate_adds_the_shop_part_only_when_it_runs() -> None:
    settings = Settings(rounds=5, window=4.0, warmup=1.0, workers=2, concurrency=32, pin=True)
    part = SHOP_SETUP + shop_seconds(5, 1.0, 4.0, IDLE_ORDERS)

    assert settings.estimate - replace(settings, shop=False).estimate == pytest.approx(part)
    assert replace(settings, shop_only=True).estimate == pytest.approx(part)
    assert part < 90  # the brief's bound for the default settings
    assert SHOP_SETUP + shop_seconds(2, 0.5, 1.5, QUICK_IDLE_ORDERS) < 35


def test_the_summary_leaves_the_shop_part_to_the_driver() -> None:
    assert make_summary()["shop"] is None


def test_failed_calls_failed_orders_and_lost_events_fail_the_run() -> None:
    shop = make_shop()
    assert _shop_errors(shop) == 0
    assert _shop_errors(None) == 0

    shop["rows"][1]["errors"] = 2
    shop["idle_orders"]["errors"] = 1
    shop["relay"][1]["events"] = 1  # of 4

    assert _shop_errors(shop) == 6


def test_the_mesh_names_its_broker_and_runs_one_instance_that_fails_nothing() -> None:
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    document["services"] = {name: document["services"][name] for name in SERVICES}

    shop_document("127.0.0.1:4999")(document)

    assert document["events"]["broker"] == "nats"
    assert document["events"]["endpoint"] == "127.0.0.1:4999"
    for spec in document["services"].values():
        assert spec["replicas"] == 1
        assert "versions" not in spec
        assert "policy" not in spec
    assert document["services"]["payment"]["settings"] == {}
    assert document["services"]["shipping"]["settings"] == {"step_seconds": SHIPPING_STEP_SECONDS}


def test_placeorder_is_one_unit_for_the_bench_customer_with_no_idempotency_key() -> None:
    request = order_pb2.PlaceOrderRequest.FromString(place_order_request())

    assert request.customer_id == CUSTOMER_ID
    assert [(i.product_id, i.quantity) for i in request.items] == [(PRODUCT_ID, 1)]
    assert request.request_id == ""  # so every call places a new order
    assert request.shipping_address.country == "BE"
