"""ProductService over gRPC: decode the request, apply the catalogue rules, encode.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.problems import NotFound
from services.common.money import Money
from services.product import domain
from services.product.store import ProductStore

__all__ = ["ProductServicer", "encode_product"]

Context = grpc.aio.ServicerContext[Any, Any]


MAX_REMEMBERED = 100_000
"""GetProduct answers kept in memory; beyond it, answers are built from the store."""


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    """The catalogue, backed by a ProductStore.

    GetProduct and BatchGetProducts keep each product they find (the hot path of every
    order), and forget them all as soon as anything in the catalogue's database changes,
    written by any instance: each read first compares the store's version with the one
    the remembered answers were read at (one PRAGMA, a few microseconds). An id not
    found is looked up again next time.

    `on_created` is called after each product created (the outbox relay's `notify`,
    so its ProductCreated is published at once).
    """

    def __init__(
        self,
        store: ProductStore,
        version: str = "v1",
        *,
        on_created: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._version = version  # the answers say it, so a split is visible to callers
        self._on_created = on_created
        self._answers: dict[str, product_pb2.GetProductResponse] = {}
        self._answers_version = store.version()

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.GetProductResponse:
        answer = self._remembered().get(request.product_id)
        if answer is None:
            product_id = domain.require_product_id(request.product_id)
            answer = self._found([product_id]).get(product_id)
            if answer is None:
                raise NotFound(domain.PRODUCT, product_id)
        return answer

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: Context
    ) -> product_pb2.BatchGetProductsResponse:
        product_ids = domain.require_product_ids(request.product_ids)
        found = self._found(product_ids)
        response = product_pb2.BatchGetProductsResponse(served_by_version=self._version)
        for product_id in product_ids:
            answer = found.get(product_id)
            if answer is None:
                response.missing_product_ids.append(product_id)
            else:
                response.products.append(answer.product)
        return response

    def _found(self, product_ids: list[str]) -> dict[str, product_pb2.GetProductResponse]:
        """The answers for those of `product_ids` that exist: remembered ones, and the
        rest from one query of the store."""
        remembered = self._remembered()
        answers = {pid: a for pid in product_ids if (a := remembered.get(pid)) is not None}
        missing = [pid for pid in product_ids if pid not in answers]
        for product in self._store.get_many(missing) if missing else ():
            answer = product_pb2.GetProductResponse(
                product=encode_product(product), served_by_version=self._version
            )
            answers[product.product_id] = answer
            if len(self._answers) < MAX_REMEMBERED:
                self._answers[product.product_id] = answer
        return answers

    def _remembered(self) -> dict[str, product_pb2.GetProductResponse]:
        """The remembered answers, emptied first if the catalogue changed since."""
        version = self._store.version()
        if version != self._answers_version:
            self._answers.clear()
            self._answers_version = version
        return self._answers

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: Context
    ) -> product_pb2.ListProductsResponse:
        page = domain.parse_page(request.page_size, request.page_token)
        products, last = self._store.page(after=page.after, limit=page.size)
        return product_pb2.ListProductsResponse(
            products=[encode_product(p) for p in products],
            next_page_token=domain.encode_page_token(last) if last else "",
        )

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: Context
    ) -> product_pb2.CreateProductResponse:
        given = request.product
        product = domain.new_product(
            product_id=given.product_id,
            name=given.name,
            description=given.description,
            price=Money.from_proto(given.price) if given.HasField("price") else None,
        )
        await asyncio.to_thread(self._store.add, product)
        if self._on_created is not None:
            self._on_created()
        return product_pb2.CreateProductResponse(product=encode_product(product))


def encode_product(product: domain.Product) -> product_pb2.Product:
    return product_pb2.Product(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        price=product.price.to_proto(),
    )
