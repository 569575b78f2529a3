"""services.order.clients over a fake channel: how downstream statuses are translated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.type import money_pb2
from shop.inventory.v1 import inventory_pb2
from shop.product.v1 import product_pb2

from mesh.problems import FailedPrecondition, PreconditionViolation
from services.order.clients import GrpcCatalog, GrpcInventory, precondition_violations
from services.order.domain import Line, Money

SHORT = [
    PreconditionViolation("STOCK", "a", "requested 5, available 2"),
    PreconditionViolation("STOCK", "b", "requested 1, available 0"),
]


def rpc_error(
    code: grpc.StatusCode, details: bytes | None = None, message: str = "m"
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if details is not None:
        trailing = grpc.aio.Metadata(("grpc-status-details-bin", details))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=message)


def shortage() -> grpc.aio.AioRpcError:
    problem = FailedPrecondition("not enough stock", SHORT)
    return rpc_error(problem.code, problem.to_status().SerializeToString(), problem.message)


class FakeChannel:
    """Answers each method with `answers[method](request)`; records the requests."""

    def __init__(self, answers: dict[str, Callable[[Any], Any]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, Any]] = []

    def unary_unary(self, method: str, **_: Any) -> Callable[..., Any]:
        async def call(request: Any, **__: Any) -> Any:
            self.requests.append((method.rsplit("/", 1)[1], request))
            return self.answers[method.rsplit("/", 1)[1]](request)

        return call


def raises(error: Exception) -> Callable[[Any], Any]:
    def answer(_: Any) -> Any:
        raise error

    return answer


def test_violations_are_decoded_from_the_status_details() -> None:
    assert precondition_violations(shortage()) == SHORT


def test_no_details_means_no_violations() -> None:
    assert precondition_violations(rpc_error(grpc.StatusCode.FAILED_PRECONDITION)) == []


def test_details_that_contradict_the_call_are_ignored() -> None:
    problem = FailedPrecondition("not enough stock", SHORT)
    error = rpc_error(problem.code, problem.to_status().SerializeToString(), "another message")
    assert precondition_violations(error) == []


def batch_answer(prices: dict[str, money_pb2.Money]) -> Callable[[Any], Any]:
    """BatchGetProducts as the product service answers it, from a price list."""

    def answer(request: Any) -> Any:
        return product_pb2.BatchGetProductsResponse(
            products=[
                product_pb2.Product(product_id=pid, price=prices[pid])
                for pid in request.product_ids
                if pid in prices
            ],
            missing_product_ids=[pid for pid in request.product_ids if pid not in prices],
        )

    return answer


async def test_catalog_prices_every_product_in_one_call_and_in_order() -> None:
    three, one = (
        money_pb2.Money(currency_code="EUR", units=3, nanos=5),
        money_pb2.Money(currency_code="EUR", units=1),
    )
    channel = FakeChannel({"BatchGetProducts": batch_answer({"a": three, "b": one})})
    prices = await GrpcCatalog(channel).unit_prices(["b", "ghost", "a"])  # type: ignore[arg-type]
    assert prices == [Money("EUR", 1, 0), None, Money("EUR", 3, 5)]
    [(method, request)] = channel.requests
    assert (method, list(request.product_ids)) == ("BatchGetProducts", ["b", "ghost", "a"])


async def test_catalog_lets_unavailable_through() -> None:
    channel = FakeChannel({"BatchGetProducts": raises(rpc_error(grpc.StatusCode.UNAVAILABLE))})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await GrpcCatalog(channel).unit_prices(["a"])  # type: ignore[arg-type]
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_reserve_sends_every_line() -> None:
    channel = FakeChannel({"ReserveStock": lambda _: inventory_pb2.ReserveStockResponse()})
    await GrpcInventory(channel).reserve("ord-1", [Line("a", 2), Line("b", 1)])  # type: ignore[arg-type]
    [(method, request)] = channel.requests
    assert method == "ReserveStock"
    assert request.order_id == "ord-1"
    assert [(i.product_id, i.quantity) for i in request.items] == [("a", 2), ("b", 1)]


async def test_reserve_turns_a_shortage_into_failed_precondition() -> None:
    channel = FakeChannel({"ReserveStock": raises(shortage())})
    with pytest.raises(FailedPrecondition) as error:
        await GrpcInventory(channel).reserve("ord-1", [Line("a", 5)])  # type: ignore[arg-type]
    assert list(error.value.violations) == SHORT


async def test_release_of_an_unknown_reservation_is_done() -> None:
    channel = FakeChannel({"ReleaseStock": raises(rpc_error(grpc.StatusCode.NOT_FOUND))})
    await GrpcInventory(channel).release("ord-1")  # type: ignore[arg-type]
    assert [m for m, _ in channel.requests] == ["ReleaseStock"]


async def test_release_lets_unavailable_through() -> None:
    channel = FakeChannel({"ReleaseStock": raises(rpc_error(grpc.StatusCode.UNAVAILABLE))})
    with pytest.raises(grpc.aio.AioRpcError):
        await GrpcInventory(channel).release("ord-1")  # type: ignore[arg-type]
