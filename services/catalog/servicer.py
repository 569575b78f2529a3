"""CatalogService over gRPC: decode the request, validate it with the catalog rules,
hand it to the queries or the command, encode the answer.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

from typing import Any

import grpc
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from services.catalog import domain
from services.catalog.commands import CatalogCommands
from services.catalog.domain import CatalogItem
from services.catalog.queries import CatalogQueries
from services.common.money import Money

__all__ = ["CatalogServicer", "encode_item"]

Context = grpc.aio.ServicerContext[Any, Any]


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """The catalog: queries on the read model, and its rebuild (admin only, which the
    authz table decides: the edge is not allowed it)."""

    def __init__(self, queries: CatalogQueries, commands: CatalogCommands) -> None:
        self._queries = queries
        self._commands = commands

    async def SearchCatalog(
        self, request: catalog_pb2.SearchCatalogRequest, context: Context
    ) -> catalog_pb2.SearchCatalogResponse:
        search = domain.parse_search(
            query=request.query,
            min_price=_money(request, "min_price"),
            max_price=_money(request, "max_price"),
            in_stock_only=request.in_stock_only,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        page = self._queries.search(search)
        return catalog_pb2.SearchCatalogResponse(
            items=[encode_item(item) for item in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetCatalogItem(
        self, request: catalog_pb2.GetCatalogItemRequest, context: Context
    ) -> catalog_pb2.GetCatalogItemResponse:
        item = self._queries.item(domain.require_product_id(request.product_id))
        return catalog_pb2.GetCatalogItemResponse(item=encode_item(item))

    async def GetProjectionStatus(
        self, request: catalog_pb2.GetProjectionStatusRequest, context: Context
    ) -> catalog_pb2.GetProjectionStatusResponse:
        status = await self._queries.status()
        return catalog_pb2.GetProjectionStatusResponse(
            events_behind=status.events_behind,
            seconds_behind=status.seconds_behind,
            events_applied=status.events_applied,
        )

    async def RebuildProjection(
        self, request: catalog_pb2.RebuildProjectionRequest, context: Context
    ) -> catalog_pb2.RebuildProjectionResponse:
        replayed = await self._commands.rebuild()
        return catalog_pb2.RebuildProjectionResponse(events_replayed=replayed)


def encode_item(item: CatalogItem) -> catalog_pb2.CatalogItem:
    return catalog_pb2.CatalogItem(
        product_id=item.product_id,
        name=item.name,
        description=item.description,
        price=item.price.to_proto(),
        available=item.available,
        in_stock=item.in_stock,
    )


def _money(request: catalog_pb2.SearchCatalogRequest, field: str) -> Money | None:
    return Money.from_proto(getattr(request, field)) if request.HasField(field) else None
