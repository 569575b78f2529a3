"""ProductServicer methods called directly, on a tmp_path store."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.type import money_pb2
from shop.product.v1 import product_pb2

from mesh.problems import AlreadyExists, InvalidArgument, NotFound
from services.product.domain import PRODUCT
from services.product.servicer import ProductServicer
from services.product.store import ProductStore


@pytest.fixture
async def servicer(tmp_path: Path) -> AsyncIterator[ProductServicer]:
    store = ProductStore(tmp_path / "product.db")
    yield ProductServicer(store)
    store.close()


def espresso(product_id: str = "sku-espresso") -> product_pb2.Product:
    return product_pb2.Product(
        product_id=product_id,
        name="Espresso",
        description="short and strong",
        price=money_pb2.Money(currency_code="EUR", units=2, nanos=500_000_000),
    )


async def create(
    servicer: ProductServicer, product: product_pb2.Product, context: Any
) -> product_pb2.Product:
    response = await servicer.CreateProduct(
        product_pb2.CreateProductRequest(product=product), context
    )
    return response.product


async def test_created_product_can_be_got(servicer: ProductServicer, context: Any) -> None:
    created = await create(servicer, espresso(), context)
    assert created == espresso()
    got = await servicer.GetProduct(
        product_pb2.GetProductRequest(product_id="sku-espresso"), context
    )
    assert got.product == espresso()


async def test_create_without_id_assigns_one(servicer: ProductServicer, context: Any) -> None:
    created = await create(servicer, espresso(product_id=""), context)
    assert re.fullmatch(r"prd-[0-9a-f]{12}", created.product_id)
    got = await servicer.GetProduct(
        product_pb2.GetProductRequest(product_id=created.product_id), context
    )
    assert got.product == created


async def test_create_twice_is_already_exists(servicer: ProductServicer, context: Any) -> None:
    await create(servicer, espresso(), context)
    with pytest.raises(AlreadyExists) as error:
        await create(servicer, espresso(), context)
    assert (error.value.resource_type, error.value.name) == (PRODUCT, "sku-espresso")


async def test_create_without_price_lists_every_bad_field(
    servicer: ProductServicer, context: Any
) -> None:
    product = product_pb2.Product(product_id="sku-1", name="")
    with pytest.raises(InvalidArgument) as error:
        await create(servicer, product, context)
    assert {v.field for v in error.value.violations} == {"product.name", "product.price"}


async def test_unknown_product_is_not_found(servicer: ProductServicer, context: Any) -> None:
    with pytest.raises(NotFound) as error:
        await servicer.GetProduct(product_pb2.GetProductRequest(product_id="sku-none"), context)
    assert (error.value.resource_type, error.value.name) == (PRODUCT, "sku-none")


async def test_get_without_id_is_invalid(servicer: ProductServicer, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.GetProduct(product_pb2.GetProductRequest(), context)
    assert [v.field for v in error.value.violations] == ["product_id"]


async def test_list_pages_through_everything(servicer: ProductServicer, context: Any) -> None:
    for index in range(5):
        await create(servicer, espresso(f"sku-{index}"), context)
    seen, token, pages = [], "", 0
    while True:
        response = await servicer.ListProducts(
            product_pb2.ListProductsRequest(page_size=2, page_token=token), context
        )
        pages += 1
        seen += [p.product_id for p in response.products]
        token = response.next_page_token
        if not token:
            break
    assert seen == [f"sku-{index}" for index in range(5)]
    assert pages == 3


async def test_list_rejects_a_garbage_token(servicer: ProductServicer, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.ListProducts(product_pb2.ListProductsRequest(page_token="xyz"), context)
    assert [v.field for v in error.value.violations] == ["page_token"]


async def test_a_malformed_id_is_invalid_without_echoing_it(
    servicer: ProductServicer, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.GetProduct(product_pb2.GetProductRequest(product_id="x" * 20_000), context)
    assert [v.field for v in error.value.violations] == ["product_id"]
    assert len(error.value.to_status().SerializeToString()) < 1_000


async def test_batch_get_answers_in_request_order_and_lists_the_missing(
    servicer: ProductServicer, context: Any
) -> None:
    for product_id in ("sku-a", "sku-b"):
        await create(servicer, espresso(product_id), context)
    await servicer.GetProduct(product_pb2.GetProductRequest(product_id="sku-a"), context)  # cached
    response = await servicer.BatchGetProducts(
        product_pb2.BatchGetProductsRequest(product_ids=["sku-b", "sku-x", "sku-a", "sku-b"]),
        context,
    )
    assert [p.product_id for p in response.products] == ["sku-b", "sku-a", "sku-b"]
    assert response.products[0] == espresso("sku-b")
    assert list(response.missing_product_ids) == ["sku-x"]


@pytest.mark.parametrize(
    ("product_ids", "fields"),
    [
        ([], ["product_ids"]),
        ([f"sku-{index}" for index in range(101)], ["product_ids"]),
        (["sku-a", "Not An Id", "sku-b", ""], ["product_ids[1]", "product_ids[3]"]),
    ],
    ids=["none", "too-many", "malformed"],
)
async def test_batch_get_refuses_bad_id_lists(
    servicer: ProductServicer, context: Any, product_ids: list[str], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.BatchGetProducts(
            product_pb2.BatchGetProductsRequest(product_ids=product_ids), context
        )
    assert [v.field for v in error.value.violations] == fields


async def test_remembered_answers_follow_a_change_written_by_another_instance(
    tmp_path: Path, context: Any
) -> None:
    """Products are remembered for the hot path, but never served stale: another
    instance (another connection to the shared file) changes a price, and the next
    GetProduct and BatchGetProducts show it."""
    path = tmp_path / "shared.db"
    store = ProductStore(path)
    servicer = ProductServicer(store)
    try:
        await create(servicer, espresso("sku-a"), context)
        request = product_pb2.GetProductRequest(product_id="sku-a")
        assert (await servicer.GetProduct(request, context)).product.price.units == 2  # cached

        other = sqlite3.connect(path)  # the other instance's write, as SQL
        with other:
            other.execute("UPDATE products SET units = 9 WHERE product_id = 'sku-a'")
        other.close()

        assert (await servicer.GetProduct(request, context)).product.price.units == 9
        batch = await servicer.BatchGetProducts(
            product_pb2.BatchGetProductsRequest(product_ids=["sku-a"]), context
        )
        assert batch.products[0].price.units == 9
    finally:
        store.close()


async def test_a_product_created_wakes_the_outbox(tmp_path: Path, context: Any) -> None:
    woken: list[str] = []
    store = ProductStore(tmp_path / "product.db")
    servicer = ProductServicer(store, on_created=lambda: woken.append("created"))
    try:
        await create(servicer, espresso(), context)
        with pytest.raises(AlreadyExists):
            await create(servicer, espresso(), context)
    finally:
        store.close()
    assert woken == ["created"]
