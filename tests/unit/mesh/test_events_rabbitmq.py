"""The RabbitMQ adapter's parts that need no broker: an Event as an AMQP message and
back (through pamqp's wire encoding), the dedupe window, and the broker's names."""

from __future__ import annotations

from unittest.mock import Mock

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands, frame, header

from mesh.events import Event
from mesh.events._rabbitmq import (
    _broker_url,
    _ConsumerQueues,
    _decode,
    _encode,
    _RecentIds,
    _short,
)

PLACED = Event(
    id="3f0c9a1e",
    stream="order-ord-123",
    type="shop.order.v1.OrderPlaced",
    data=b"\x0a\x07ord-123\x00\xff",
    occurred_at=1767225600.123456,
    version=1,
)


def over_the_wire(properties: commands.Basic.Properties, body: bytes) -> DeliveredMessage:
    """The message a consumer gets for a publish with `properties` and `body`."""
    sent = frame.marshal(header.ContentHeader(0, len(body), properties), 1)
    received = frame.unmarshal(sent)[2]
    assert isinstance(received, header.ContentHeader)
    deliver = commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, routing_key="orders")
    return DeliveredMessage(delivery=deliver, header=received, body=body, channel=Mock())


def test_an_event_travels_as_an_amqp_message_exactly() -> None:
    properties, body = _encode(PLACED)

    assert properties.message_id == PLACED.id
    assert properties.delivery_mode == 2  # persistent
    assert body == PLACED.data
    assert _decode(over_the_wire(properties, body)) == PLACED


def test_a_message_that_is_no_event_does_not_decode() -> None:
    with pytest.raises(ValueError, match="Nats-Msg-Id"):
        _decode(over_the_wire(commands.Basic.Properties(headers={"x": "y"}), b"hello"))


def test_the_dedupe_window_knows_the_last_ids_only() -> None:
    recent = _RecentIds(3)

    assert [recent.observe(i) for i in ("a", "b", "c", "a")] == [False, False, False, True]
    assert recent.observe(None) is False  # no event: it takes a place all the same
    assert recent.observe("b") is False  # the window is c, a, None: b has left it
    assert recent.observe("a") is True  # the window is a, None, b


def test_the_broker_names_fit_amqp_and_stay_distinct() -> None:
    long_topic = ".".join(["t" * 63] * 8)  # the longest topic name there is
    names = _ConsumerQueues.of(long_topic, "billing")
    other = _ConsumerQueues.of(long_topic[:-1] + "u", "billing")

    for name in (names.routing_key, names.stream, names.lease, names.cursor):
        assert len(name) <= 255
    assert {names.stream, names.lease, names.cursor}.isdisjoint(
        {other.stream, other.lease, other.cursor}
    )
    assert _short("orders") == "orders"
    assert _ConsumerQueues.of("orders", "billing").lease == "shop.lease.billing.orders"


def test_an_endpoint_is_host_port_or_an_amqp_url() -> None:
    assert _broker_url("127.0.0.1:5672") == "amqp://guest:guest@127.0.0.1:5672/"
    url = "amqps://shop:secret@mq.example:5671/prod"
    assert _broker_url(url) == url
