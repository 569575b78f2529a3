"""One PlaceOrder produces one trace across order, product and inventory."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import grpc
import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc

from tests.harness.mesh import MeshHarness

PLACE_ORDER = "/shop.order.v1.OrderService/PlaceOrder"


def _spans(traces: Path, trace_id: str) -> list[dict[str, object]]:
    found = []
    for path in traces.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["trace_id"] == trace_id:
                found.append(span)
    return found


async def _wait_for_spans(traces: Path, trace_id: str, count: int) -> list[dict[str, object]]:
    until = time.monotonic() + 10
    while time.monotonic() < until:
        spans = _spans(traces, trace_id)
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.2)
    return _spans(traces, trace_id)


async def test_place_order_spans_share_one_trace_with_parent_links(shop: MeshHarness) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    stub = order_pb2_grpc.OrderServiceStub(shop.client().channel("order"))
    await stub.PlaceOrder(
        order_pb2.PlaceOrderRequest(
            customer_id="tracer",
            items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
        ),
        metadata=[("traceparent", f"00-{trace_id}-{caller_span}-01")],
    )
    # order: server span + a client span per saga call (product, inventory, payment,
    # shipping); each of those four: one server span.
    spans = await _wait_for_spans(shop.config.state_dir / "traces", trace_id, 9)

    def one(service: str, kind: str, name: str) -> dict[str, object]:
        matches = [
            s for s in spans if (s["service"], s["kind"], s["name"]) == (service, kind, name)
        ]
        assert len(matches) == 1, f"{service} {kind} {name}: {matches}\nall: {spans}"
        return matches[0]

    order = one("order", "SERVER", PLACE_ORDER)
    batch_get = one("order", "CLIENT", "/shop.product.v1.ProductService/BatchGetProducts")
    reserve = one("order", "CLIENT", "/shop.inventory.v1.InventoryService/ReserveStock")
    product = one("product", "SERVER", "/shop.product.v1.ProductService/BatchGetProducts")
    inventory = one("inventory", "SERVER", "/shop.inventory.v1.InventoryService/ReserveStock")

    assert order["parent_span_id"] == caller_span
    assert batch_get["parent_span_id"] == order["span_id"]
    assert reserve["parent_span_id"] == order["span_id"]
    assert product["parent_span_id"] == batch_get["span_id"]
    assert inventory["parent_span_id"] == reserve["span_id"]

    def interval(span: dict[str, object]) -> tuple[int, int]:
        return int(str(span["start_unix_nano"])), int(str(span["end_unix_nano"]))

    # The order's business log line carries the same trace and the order span's id.
    log = shop.config.state_dir / "logs" / "order-1.log"
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    placed = [
        e for e in entries if e["message"] == "order placed" and e.get("trace_id") == trace_id
    ]
    assert len(placed) == 1
    assert placed[0]["span_id"] == order["span_id"]
    assert placed[0]["customer_id"] == "tracer"

    # The downstream work happens inside the order span.
    for child in (batch_get, reserve, product, inventory):
        assert interval(order)[0] <= interval(child)[0] <= interval(child)[1] <= interval(order)[1]


async def test_a_call_its_caller_did_not_sample_leaves_no_spans_but_keeps_its_trace_id(
    shop: MeshHarness,
) -> None:
    stub = order_pb2_grpc.OrderServiceStub(shop.client().channel("order"))
    item = order_pb2.OrderItem(product_id="sku-mug", quantity=1)
    unsampled = secrets.token_hex(16)
    await stub.PlaceOrder(
        order_pb2.PlaceOrderRequest(customer_id="quiet", items=[item]),
        metadata=[("traceparent", f"00-{unsampled}-{secrets.token_hex(8)}-00")],
    )
    # A sampled call made afterwards is the marker: once its spans are in every file,
    # anything of the earlier call would have been exported too.
    marker = secrets.token_hex(16)
    await stub.PlaceOrder(
        order_pb2.PlaceOrderRequest(customer_id="marker", items=[item]),
        metadata=[("traceparent", f"00-{marker}-{secrets.token_hex(8)}-01")],
    )
    traces = shop.config.state_dir / "traces"
    assert len(await _wait_for_spans(traces, marker, 5)) >= 5
    assert _spans(traces, unsampled) == []

    log = shop.config.state_dir / "logs" / "order-1.log"
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(e["message"] == "order placed" and e.get("trace_id") == unsampled for e in entries)


async def test_a_denied_caller_leaves_no_span_even_when_it_asks_for_one(
    shop: MeshHarness,
) -> None:
    """Authorisation comes before tracing: a caller may not make a service record spans
    (or spend its tracing budget) for calls it is not allowed to make."""
    item = order_pb2.OrderItem(product_id="sku-mug", quantity=1)
    denied = secrets.token_hex(16)
    as_product = order_pb2_grpc.OrderServiceStub(shop.client("product").channel("order"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await as_product.PlaceOrder(
            order_pb2.PlaceOrderRequest(customer_id="intruder", items=[item]),
            metadata=[("traceparent", f"00-{denied}-{secrets.token_hex(8)}-01")],
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    marker = secrets.token_hex(16)
    await order_pb2_grpc.OrderServiceStub(shop.client().channel("order")).PlaceOrder(
        order_pb2.PlaceOrderRequest(customer_id="marker", items=[item]),
        metadata=[("traceparent", f"00-{marker}-{secrets.token_hex(8)}-01")],
    )
    traces = shop.config.state_dir / "traces"
    assert len(await _wait_for_spans(traces, marker, 5)) >= 5
    assert _spans(traces, denied) == []
