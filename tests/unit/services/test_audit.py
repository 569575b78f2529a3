"""The audit service's parts on a tmp_path database, without processes: queries are
validated field by field, payloads read as proto3 JSON, each event is appended once,
the database refuses to change or remove an entry, and queries filter and page in
position order."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, timestamp_pb2
from google.type import money_pb2
from shop.audit.v1 import audit_pb2 as pb
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events

from mesh.events import Event
from mesh.problems import InvalidArgument
from services.audit import domain
from services.audit.consumer import AuditRecorder
from services.audit.domain import Query
from services.audit.payloads import EVENT_TYPES, payload_json
from services.audit.servicer import AuditServicer
from services.audit.store import APPEND_ONLY, AuditStore

T0 = 1_700_000_000.0  # occurred_at of the first test event, epoch seconds
RECORDED_NS = 1_800_000_000 * 10**9
CONTEXT: Any = None  # QueryAuditLog never looks at it


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(tmp_path / "audit.db")
    yield store
    store.close()


@pytest.fixture
def recorder(store: AuditStore) -> AuditRecorder:
    return AuditRecorder(store, clock=lambda: RECORDED_NS)


def stamp(seconds: float) -> timestamp_pb2.Timestamp:
    found = timestamp_pb2.Timestamp()
    found.FromNanoseconds(round(seconds * 1e9))
    return found


def placed(order_id: str, at: float, version: int = 1) -> Event:
    message = order_events.OrderPlaced(
        order_id=order_id,
        customer_id="ada",
        total=money_pb2.Money(currency_code="USD", units=12),
    )
    return Event(
        id=uuid.uuid4().hex,
        stream=f"order-{order_id}",
        type=message.DESCRIPTOR.full_name,
        data=message.SerializeToString(),
        occurred_at=at,
        version=version,
    )


def stock(product_id: str, at: float) -> Event:
    message = inventory_events.StockChanged(product_id=product_id, on_hand=3, available=3)
    return Event(
        id=uuid.uuid4().hex,
        stream=f"stock-{product_id}",
        type=message.DESCRIPTOR.full_name,
        data=message.SerializeToString(),
        occurred_at=at,
        version=1,
    )


def query(**fields: Any) -> Query:
    request: dict[str, Any] = {
        "stream": "", "topic": "", "event_type": "", "since": None, "until": None,
        "page_size": 0, "page_token": "",
    }  # fmt: skip
    return domain.parse_query(**{**request, **fields})


def bad_fields(**fields: Any) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        query(**fields)
    return [violation.field for violation in caught.value.violations]


# -- validation ------------------------------------------------------------------------


def test_an_empty_query_reads_everything_from_the_start() -> None:
    assert query() == Query("", "", "", None, None, size=50, after=0)


def test_a_query_keeps_its_filters_and_range_in_nanoseconds() -> None:
    found = query(
        stream="order-ord-1",
        topic="order",
        event_type="shop.order.v1.OrderPlaced",
        since=stamp(T0),
        until=stamp(T0 + 1),
        page_size=500,
        page_token=domain.encode_page_token(7),
    )
    assert found == Query(
        "order-ord-1", "order", "shop.order.v1.OrderPlaced",
        since_ns=round(T0 * 1e9), until_ns=round((T0 + 1) * 1e9), size=200, after=7,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"until": stamp(T0), "since": stamp(T0)}, ["until"]),
        ({"until": stamp(T0), "since": stamp(T0 + 1)}, ["until"]),
        ({"since": timestamp_pb2.Timestamp(seconds=10**12)}, ["since.seconds"]),
        ({"until": timestamp_pb2.Timestamp(seconds=1, nanos=-1)}, ["until.nanos"]),
        ({"page_token": "bm90aWZpY2F0aW9uOjE="}, ["page_token"]),  # notification's
        ({"page_token": "%%%"}, ["page_token"]),
        ({"page_size": -1}, ["page_size"]),
        ({"topic": "shipping"}, ["topic"]),
        ({"stream": "x" * 257}, ["stream"]),
        ({"stream": "line\nbreak"}, ["stream"]),
        ({"event_type": "not a name"}, ["type"]),
        (
            {"stream": " ", "topic": "x", "event_type": "1x", "since": stamp(2), "until": stamp(1)},
            ["stream", "topic", "type", "until"],
        ),
    ],
)
def test_a_bad_query_names_every_bad_field(fields: dict[str, Any], bad: list[str]) -> None:
    assert bad_fields(**fields) == bad


# -- payloads --------------------------------------------------------------------------


def test_every_services_event_messages_are_known() -> None:
    assert {
        "shop.user.v1.UserRegistered",
        "shop.product.v1.ProductCreated",
        "shop.inventory.v1.StockChanged",
        "shop.order.v1.OrderCancelled",
        "shop.payment.v1.PaymentRefunded",
    } <= set(EVENT_TYPES)
    assert "shop.order.v1.PlaceOrderRequest" not in EVENT_TYPES  # not an event


def test_a_payload_reads_as_proto3_json_with_every_field() -> None:
    event = placed("ord-1", T0)
    text = payload_json(event.type, event.data)
    assert text == (
        '{"customerId": "ada", "lines": [], "orderId": "ord-1",'
        ' "total": {"currencyCode": "USD", "nanos": 0, "units": "12"}}'
    )
    again = order_events.OrderPlaced()
    json_format.Parse(text, again)
    assert again.SerializeToString() == event.data


def test_an_unknown_type_or_a_broken_payload_has_no_json() -> None:
    assert payload_json("shop.order.v1.OrderShipped", b"") == ""
    assert payload_json("shop.order.v1.OrderPlaced", b"\xff\xff\xff") == ""


# -- the log ---------------------------------------------------------------------------


def test_an_event_is_appended_once_however_often_it_comes(
    store: AuditStore, recorder: AuditRecorder
) -> None:
    event = placed("ord-1", T0)
    assert recorder.record("order", event) is True
    assert recorder.record("order", event) is False
    entries, cursor = store.query(query())
    assert cursor is None
    [entry] = entries
    assert (entry.position, entry.event_id, entry.topic, entry.stream, entry.version) == (
        1, event.id, "order", "order-ord-1", 1,
    )  # fmt: skip
    assert (entry.type, entry.payload) == (event.type, event.data)
    assert entry.occurred_at_ns == round(T0 * 1e9)
    assert entry.recorded_at_ns == RECORDED_NS
    assert '"orderId": "ord-1"' in entry.payload_json


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE audit_log SET topic = 'user'",
        "UPDATE audit_log SET payload_json = '' WHERE position = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE position = 1",
        # REPLACE deletes the row it conflicts with without firing delete triggers.
        "INSERT OR REPLACE INTO audit_log (position, event_id, topic, stream, version, type,"
        " occurred_at_ns, recorded_at_ns, payload, payload_json)"
        " VALUES (1, 'forged', 'order', 's', 1, 't', 0, 0, x'', '')",
        "INSERT OR REPLACE INTO audit_log (event_id, topic, stream, version, type,"
        " occurred_at_ns, recorded_at_ns, payload, payload_json)"
        " SELECT event_id, 'user', stream, version, type, 0, 0, x'', '' FROM audit_log",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_entry(
    store: AuditStore, recorder: AuditRecorder, change: str
) -> None:
    recorder.record("order", placed("ord-1", T0))
    before = store.query(query())
    with (
        sqlite3.connect(store.path) as db,
        pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY),
    ):
        db.execute(change)
    assert store.query(query()) == before


def test_queries_filter_and_page_in_position_order(
    store: AuditStore, recorder: AuditRecorder
) -> None:
    events = [
        ("order", placed("ord-1", T0)),
        ("inventory", stock("sku-1", T0 + 1)),
        ("order", placed("ord-2", T0 + 2)),
        ("order", placed("ord-1", T0 + 3, version=2)),
        ("inventory", stock("sku-2", T0 + 4)),
    ]
    for topic, event in events:
        recorder.record(topic, event)

    def ids(**fields: Any) -> list[str]:
        return [entry.event_id for entry in store.query(query(**fields))[0]]

    every = [event.id for _, event in events]
    assert ids() == every
    assert ids(stream="order-ord-1") == [every[0], every[3]]
    assert ids(stream="order-ord") == []  # exact, not a prefix
    assert ids(topic="inventory") == [every[1], every[4]]
    assert ids(event_type="shop.order.v1.OrderPlaced") == [every[0], every[2], every[3]]
    assert ids(since=stamp(T0 + 1), until=stamp(T0 + 3)) == [every[1], every[2]]  # [since, until)
    assert ids(topic="order", since=stamp(T0 + 2)) == [every[2], every[3]]

    pages, token = [], ""
    while True:
        entries, cursor = store.query(query(page_size=2, page_token=token))
        pages.append([entry.event_id for entry in entries])
        if cursor is None:
            break
        token = domain.encode_page_token(cursor)
    assert pages == [every[0:2], every[2:4], every[4:5]]


async def test_the_servicer_answers_entries_with_their_json_as_a_struct(
    store: AuditStore, recorder: AuditRecorder
) -> None:
    recorder.record("order", placed("ord-1", T0))
    recorder.record("order", placed("ord-2", T0 + 1))
    unknown = Event(
        id="e-unknown", stream="x-1", type="shop.x.v1.Y", data=b"\x01", occurred_at=T0, version=1
    )
    recorder.record("order", unknown)
    servicer = AuditServicer(store)
    first = await servicer.QueryAuditLog(pb.QueryAuditLogRequest(page_size=2), CONTEXT)
    assert [entry.stream for entry in first.entries] == ["order-ord-1", "order-ord-2"]
    data = json_format.MessageToDict(first.entries[0].data)
    assert data["orderId"] == "ord-1"
    assert data["total"]["units"] == "12"  # int64: a string in proto3 JSON
    assert first.entries[0].occurred_at == stamp(T0)
    assert first.entries[0].recorded_at.ToNanoseconds() == RECORDED_NS
    rest = await servicer.QueryAuditLog(
        pb.QueryAuditLogRequest(page_size=2, page_token=first.next_page_token), CONTEXT
    )
    [last] = rest.entries
    assert (last.event_id, last.payload, last.HasField("data")) == ("e-unknown", b"\x01", False)
    assert rest.next_page_token == ""
    with pytest.raises(InvalidArgument):
        await servicer.QueryAuditLog(
            pb.QueryAuditLogRequest(since=stamp(T0 + 1), until=stamp(T0)), CONTEXT
        )


def test_times_beyond_what_sqlite_holds_are_clamped_alike(
    store: AuditStore, recorder: AuditRecorder
) -> None:
    in_milliseconds = placed("ord-ms", T0 * 1000)  # a publisher's bug: year 50000 or so
    assert recorder.record("order", in_milliseconds)
    [entry], _ = store.query(query())
    assert entry.occurred_at_ns == domain.MAX_NS
    far = timestamp_pb2.Timestamp(seconds=253_402_300_799)  # 9999-12-31T23:59:59Z
    assert query(until=far).until_ns == domain.MAX_NS
    found, _ = store.query(query(since=stamp(T0), until=far))
    assert found == [], "until is exclusive: the clamped event sits at the bound itself"
    year_2300 = timestamp_pb2.Timestamp(seconds=10_413_792_000)  # past 2262: held at the bound
    found, _ = store.query(query(since=year_2300))
    assert [e.event_id for e in found] == [in_milliseconds.id]
    ancient = timestamp_pb2.Timestamp(seconds=-62_135_596_800)  # 0001-01-01T00:00:00Z
    assert query(since=ancient).since_ns == domain.MIN_NS


def test_an_event_the_log_cannot_hold_is_skipped_not_raised(
    store: AuditStore, recorder: AuditRecorder
) -> None:
    event = placed("ord-1", T0, version=2**63)
    assert recorder.record("order", event) is False  # raising would block its topic
    assert store.query(query()) == ([], None)
