"""product -> inventory -> catalog through events, with real processes on a NATS broker
of the module's own: product (publishing ProductCreated through its outbox), inventory
(learning products from them, refusing stock for any other, publishing StockChanged)
and two catalog replicas on one read model, called as admin through the mesh client.

A product created shows up in the catalog, stock changes move it in and out of stock,
searches filter and page, bad searches name their fields, an event delivered twice
has one effect, a rebuilt read model equals the live one, and the lag is reported."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.events import Event, NatsEventBus
from mesh.identity import IdentityFiles, channel_credentials
from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import REPO, MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value

pytestmark = pytest.mark.integration

OPENING = {"sku-cat-opening": 7, "sku-cat-twice": 5}
"""Opening stock for products no test has created when the mesh starts."""
CATALOGS = ("catalog-1", "catalog-2")
CONSUMERS = {"catalog": ("product", "inventory"), "inventory": ("product",)}

T = TypeVar("T")


def _service(replicas: int, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"replicas": replicas, "port": 0, "metrics_port": 0, "settings": settings or {}}


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    repo = yaml.safe_load((REPO / "mesh.yaml").read_text())
    repo_opening = repo["services"]["inventory"]["settings"]["opening_stock"]
    config = write_config(
        tmp_path_factory.mktemp("catalog"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"product": 1, "inventory": 1, "catalog": 2},
        events_endpoint=broker.endpoint,
        overrides={
            "services": {"inventory": _service(1, {"opening_stock": {**repo_opening, **OPENING}})},
            "identities": ["edge"],
        },
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def products(mesh: MeshHarness) -> Any:
    return product_pb2_grpc.ProductServiceStub(mesh.client().channel("product"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def inventory(mesh: MeshHarness) -> Any:
    return inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def catalog(mesh: MeshHarness) -> Any:
    return catalog_pb2_grpc.CatalogServiceStub(mesh.client().channel("catalog"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def replicas(mesh: MeshHarness) -> AsyncIterator[list[Any]]:
    """A stub on each catalog replica's own address, as admin."""
    credentials = channel_credentials(IdentityFiles(mesh.config.certs_dir, "admin"))
    channels = []
    for instance_id in CATALOGS:
        endpoint = mesh.instances[instance_id].endpoint
        assert endpoint is not None
        channels.append(grpc.aio.secure_channel(endpoint.address, credentials))
    try:
        yield [catalog_pb2_grpc.CatalogServiceStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
    finally:
        for channel in channels:
            await channel.close()


# -- helpers ---------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """`check()`'s result once it passes (returns without an AssertionError or a gRPC
    error); its last failure after `timeout` s."""
    until = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, grpc.aio.AioRpcError):
            if time.monotonic() > until:
                raise
        await asyncio.sleep(0.05)


def usd(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=units, nanos=nanos)


def new_tag() -> str:
    """A word no other test's product names hold."""
    return f"t{uuid.uuid4().hex[:8]}"


async def create(
    products: Any, name: str, price: money_pb2.Money, product_id: str | None = None
) -> str:
    product = product_pb2.Product(
        product_id=product_id or f"sku-{uuid.uuid4().hex[:10]}",
        name=name,
        description=f"the {name}",
        price=price,
    )
    await products.CreateProduct(product_pb2.CreateProductRequest(product=product), timeout=10)
    return product.product_id


async def adjust(inventory: Any, product_id: str, delta: int) -> Any:
    """AdjustStock once inventory has learnt of the product (NOT_FOUND until then)."""

    async def adjusted() -> Any:
        request = inventory_pb2.AdjustStockRequest(product_id=product_id, delta=delta, reason="t")
        return (await inventory.AdjustStock(request, timeout=5)).stock

    return await eventually(adjusted)


async def item_of(catalog: Any, product_id: str, **expected: Any) -> Any:
    """The catalog's item for `product_id`, once it shows the `expected` fields."""

    async def shown() -> Any:
        request = catalog_pb2.GetCatalogItemRequest(product_id=product_id)
        item = (await catalog.GetCatalogItem(request, timeout=5)).item
        assert {field: getattr(item, field) for field in expected} == expected
        return item

    return await eventually(shown)


async def search_all(catalog: Any, page_size: int = 100, **filters: Any) -> list[Any]:
    """Every item SearchCatalog gives for `filters`, page after page."""
    items: list[Any] = []
    token = ""
    while True:
        request = catalog_pb2.SearchCatalogRequest(page_size=page_size, page_token=token, **filters)
        response = await catalog.SearchCatalog(request, timeout=5)
        items += response.items
        token = response.next_page_token
        if not token:
            return items


def ids(items: list[Any]) -> list[str]:
    return [item.product_id for item in items]


async def caught_up(bus: NatsEventBus) -> None:
    """Wait until inventory and the catalog have handled every event stored."""

    async def none_behind() -> None:
        for consumer, topics in CONSUMERS.items():
            for topic in topics:
                backlog = await bus.backlog(topic, consumer)
                assert backlog.events == 0, f"{consumer} is {backlog.events} behind on {topic}"

    await eventually(none_behind)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def detail(error: grpc.aio.AioRpcError, kind: type[T]) -> T:
    for packed in rpc_status.from_call(error).details:
        message = kind()
        if packed.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} in {error}")


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    bad = detail(error, error_details_pb2.BadRequest)
    return [violation.field for violation in bad.field_violations]


# -- the flow from product to catalog --------------------------------------------------


async def test_a_created_product_shows_up_in_every_replica(
    products: Any, catalog: Any, replicas: list[Any]
) -> None:
    product_id = await create(products, "Walnut tray", usd(31, 500_000_000))

    item = await item_of(catalog, product_id)

    assert (item.name, item.description) == ("Walnut tray", "the Walnut tray")
    assert (item.price.currency_code, item.price.units, item.price.nanos) == ("USD", 31, 5 * 10**8)
    assert (item.available, item.in_stock) == (0, False)
    for replica in replicas:  # one read model, shared
        assert await item_of(replica, product_id) == item


async def test_stock_changes_move_an_item_in_and_out_of_stock(
    products: Any, inventory: Any, catalog: Any
) -> None:
    product_id = await create(products, "Linen apron", usd(18))
    await adjust(inventory, product_id, 3)
    await item_of(catalog, product_id, available=3, in_stock=True)

    order_id = f"ord-{uuid.uuid4().hex[:12]}"
    item = inventory_pb2.ReservationItem(product_id=product_id, quantity=3)
    await inventory.ReserveStock(
        inventory_pb2.ReserveStockRequest(order_id=order_id, items=[item]), timeout=5
    )
    await item_of(catalog, product_id, available=0, in_stock=False)

    await inventory.ReleaseStock(inventory_pb2.ReleaseStockRequest(order_id=order_id), timeout=5)
    await item_of(catalog, product_id, available=3, in_stock=True)


async def test_inventory_refuses_stock_for_an_unknown_product_until_it_is_created(
    products: Any, inventory: Any
) -> None:
    product_id = f"sku-{uuid.uuid4().hex[:10]}"
    adjusting = await refused(
        inventory.AdjustStock(inventory_pb2.AdjustStockRequest(product_id=product_id, delta=4))
    )
    item = inventory_pb2.ReservationItem(product_id=product_id, quantity=1)
    reserving = await refused(
        inventory.ReserveStock(inventory_pb2.ReserveStockRequest(order_id="ord-x", items=[item]))
    )
    stock = await inventory.GetStock(inventory_pb2.GetStockRequest(product_id=product_id))

    for error in (adjusting, reserving):
        assert error.code() is grpc.StatusCode.NOT_FOUND
        info = detail(error, error_details_pb2.ResourceInfo)
        assert (info.resource_type, info.resource_name) == ("shop.product.v1.Product", product_id)
        assert product_id in (error.details() or "")
    assert stock.stock == inventory_pb2.StockLevel(product_id=product_id)  # a read: zeros

    await create(products, "Late arrival", usd(2), product_id=product_id)
    assert (await adjust(inventory, product_id, 4)).on_hand == 4


async def test_opening_stock_is_given_when_inventory_learns_the_product(
    products: Any, inventory: Any, catalog: Any
) -> None:
    request = inventory_pb2.GetStockRequest(product_id="sku-cat-opening")
    assert (await inventory.GetStock(request)).stock.on_hand == 0  # configured, not created

    await create(products, "Opening batch", usd(9), product_id="sku-cat-opening")

    async def stocked() -> None:
        assert (await inventory.GetStock(request)).stock.on_hand == OPENING["sku-cat-opening"]

    await eventually(stocked)
    await item_of(catalog, "sku-cat-opening", available=7, in_stock=True)


# -- searching -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def shelf(products: Any, inventory: Any, catalog: Any) -> dict[str, str]:
    """Five products whose names share a tag word, three in stock; {name: id}."""
    tag = new_tag()
    shelf = {
        f"{tag} Alpha mug": usd(12),
        f"{tag} beta MUG": usd(8, 500_000_000),
        f"{tag} Gamma cup": usd(5),
        f"{tag} delta mug": usd(30),
        f"{tag} epsilon mug": money_pb2.Money(currency_code="EUR", units=10),
    }
    made = {name: await create(products, name, price) for name, price in shelf.items()}
    for name in (f"{tag} Alpha mug", f"{tag} Gamma cup", f"{tag} epsilon mug"):
        await adjust(inventory, made[name], 2)

    async def all_shown() -> None:
        items = await search_all(catalog, query=tag)
        assert sum(item.in_stock for item in items) == 3
        assert len(items) == 5

    await eventually(all_shown)
    return {"tag": tag, **made}


async def test_search_matches_every_word_in_any_case_ordered_by_name(
    catalog: Any, shelf: dict[str, str]
) -> None:
    tag = shelf["tag"]
    mugs = await search_all(catalog, query=f"MUG {tag.upper()}")
    assert [item.name for item in mugs] == [
        f"{tag} Alpha mug",
        f"{tag} beta MUG",
        f"{tag} delta mug",
        f"{tag} epsilon mug",
    ]
    assert ids(await search_all(catalog, query=f"{tag} amma")) == [shelf[f"{tag} Gamma cup"]]
    assert await search_all(catalog, query=f"{tag} teapot") == []


async def test_search_filters_by_price_and_stock(catalog: Any, shelf: dict[str, str]) -> None:
    tag = shelf["tag"]
    dollars = await search_all(catalog, query=tag, min_price=usd(8), max_price=usd(12))
    assert [item.name for item in dollars] == [f"{tag} Alpha mug", f"{tag} beta MUG"]
    cheap = await search_all(catalog, query=tag, max_price=usd(8, 500_000_000))
    assert [item.name for item in cheap] == [f"{tag} beta MUG", f"{tag} Gamma cup"]
    euros = await search_all(catalog, query=tag, min_price=money_pb2.Money(currency_code="EUR"))
    assert [item.name for item in euros] == [f"{tag} epsilon mug"]
    in_stock = await search_all(catalog, query=f"{tag} mug", in_stock_only=True)
    assert [item.name for item in in_stock] == [f"{tag} Alpha mug", f"{tag} epsilon mug"]


async def test_pages_go_through_every_match_once(catalog: Any, shelf: dict[str, str]) -> None:
    tag = shelf["tag"]
    whole = await search_all(catalog, query=tag)
    request = catalog_pb2.SearchCatalogRequest(query=tag, page_size=2)
    first = await catalog.SearchCatalog(request)

    assert await search_all(catalog, page_size=2, query=tag) == whole
    assert len(first.items) == 2
    assert first.next_page_token
    default = await catalog.SearchCatalog(catalog_pb2.SearchCatalogRequest(query=tag))
    assert (list(default.items), default.next_page_token) == (whole, "")
    other = catalog_pb2.SearchCatalogRequest(
        query=tag, in_stock_only=True, page_token=first.next_page_token
    )
    error = await refused(catalog.SearchCatalog(other))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == ["page_token"]


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"page_token": "bm90IGEgdG9rZW4"}, ["page_token"]),
        ({"page_size": 101}, ["page_size"]),
        ({"page_size": -1}, ["page_size"]),
        ({"min_price": money_pb2.Money(currency_code="USD", units=-1)}, ["min_price"]),
        (
            {"min_price": usd(1), "max_price": money_pb2.Money(currency_code="EUR", units=5)},
            ["max_price.currency_code"],
        ),
        ({"min_price": usd(5), "max_price": usd(4)}, ["max_price"]),
        ({"query": "q" * 201, "page_size": 1000}, ["query", "page_size"]),
    ],
    ids=["token", "size-over", "size-negative", "negative", "two-currencies", "inverted", "both"],
)
async def test_a_bad_search_names_each_bad_field(
    catalog: Any, request_fields: dict[str, Any], fields: list[str]
) -> None:
    error = await refused(catalog.SearchCatalog(catalog_pb2.SearchCatalogRequest(**request_fields)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == fields


async def test_an_unknown_item_is_not_found_and_a_malformed_id_invalid(catalog: Any) -> None:
    missing = await refused(
        catalog.GetCatalogItem(catalog_pb2.GetCatalogItemRequest(product_id="sku-never-made"))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    info = detail(missing, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == (
        "shop.catalog.v1.CatalogItem",
        "sku-never-made",
    )
    malformed = await refused(
        catalog.GetCatalogItem(catalog_pb2.GetCatalogItemRequest(product_id="Not An Id"))
    )
    assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(malformed) == ["product_id"]


# -- delivery, rebuild, lag ------------------------------------------------------------


async def test_an_event_delivered_twice_has_one_effect(
    products: Any, inventory: Any, catalog: Any, bus: NatsEventBus
) -> None:
    product_id = "sku-cat-twice"
    await create(products, "Twice told", usd(4), product_id=product_id)
    assert (await adjust(inventory, product_id, -2)).on_hand == OPENING[product_id] - 2
    await item_of(catalog, product_id, available=3)
    await caught_up(bus)
    applied = await catalog.GetProjectionStatus(catalog_pb2.GetProjectionStatusRequest())
    created = [e for e in await bus.history("product") if e.stream == f"product-{product_id}"]
    stock = [e for e in await bus.history("inventory") if e.stream == f"stock-{product_id}"]
    assert [e.version for e in stock] == [1, 2]  # opened, adjusted

    # The same event again (the broker drops its id), then as a relay republishes it
    # once the broker has forgotten the id: a new id, same stream and version. And the
    # first stock event again, which would put the stock back to 5 if applied.
    await bus.publish("product", created[0])
    await bus.publish("product", dataclasses.replace(created[0], id=str(uuid.uuid4())))
    await bus.publish("inventory", dataclasses.replace(stock[0], id=str(uuid.uuid4())))
    await caught_up(bus)

    level = await inventory.GetStock(inventory_pb2.GetStockRequest(product_id=product_id))
    assert level.stock.on_hand == 3  # opening stock given once
    restocked = [e for e in await bus.history("inventory") if e.stream == f"stock-{product_id}"]
    assert [e.version for e in restocked] == [1, 2, 1]  # only the copy: inventory sent nothing
    assert (await item_of(catalog, product_id)).available == 3
    after = await catalog.GetProjectionStatus(catalog_pb2.GetProjectionStatusRequest())
    assert after.events_applied == applied.events_applied


async def test_a_rebuilt_read_model_equals_the_live_one(
    products: Any, catalog: Any, bus: NatsEventBus
) -> None:
    await create(products, f"{new_tag()} rebuild witness", usd(1))
    await caught_up(bus)
    live = await search_all(catalog)
    events: list[Event] = [*await bus.history("product"), *await bus.history("inventory")]

    rebuilt = await catalog.RebuildProjection(catalog_pb2.RebuildProjectionRequest(), timeout=30)

    assert await search_all(catalog) == live
    assert rebuilt.events_replayed == len({(e.stream, e.version) for e in events})
    status = await catalog.GetProjectionStatus(catalog_pb2.GetProjectionStatusRequest())
    assert status.events_applied == rebuilt.events_replayed


async def test_only_admin_may_rebuild_not_the_edge(mesh: MeshHarness) -> None:
    as_edge = catalog_pb2_grpc.CatalogServiceStub(mesh.client("edge").channel("catalog"))  # type: ignore[no-untyped-call]
    await as_edge.SearchCatalog(catalog_pb2.SearchCatalogRequest(page_size=1), timeout=5)
    error = await refused(as_edge.RebuildProjection(catalog_pb2.RebuildProjectionRequest()))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_the_lag_is_reported_by_the_api_and_the_metrics(
    mesh: MeshHarness, products: Any, catalog: Any, bus: NatsEventBus
) -> None:
    await create(products, f"{new_tag()} lag witness", usd(1))
    await caught_up(bus)
    status = await catalog.GetProjectionStatus(catalog_pb2.GetProjectionStatusRequest())
    assert (status.events_behind, status.seconds_behind) == (0, 0.0)
    assert status.events_applied > 0

    async def gauges_at_zero() -> None:
        for instance_id in CATALOGS:
            samples = scrape_instance(mesh.instances[instance_id])
            assert ("projection_lag_events", frozenset({("projection", "catalog")})) in samples
            assert value(samples, "projection_lag_events", projection="catalog") == 0
            assert value(samples, "projection_lag_seconds", projection="catalog") == 0

    await eventually(gauges_at_zero)
