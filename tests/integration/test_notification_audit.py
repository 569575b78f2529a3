"""The notification service (two replicas on one database) and the audit service as
real processes on a real NATS broker, fed by events this test publishes itself with an
EventBus, carrying the services' real protobuf event messages; auth and the edge for
the HTTP routes and the signed-in user.

The broker is this module's own: the services consume fixed topics under fixed
consumer names, which tests sharing the session's broker would split between them, and
its stream is created here with a short dedupe window, so that an event published
again after it really is stored and delivered twice: what "idempotent by event id"
must survive.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.audit.v1 import audit_pb2, audit_pb2_grpc
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.notification.v1 import notification_pb2, notification_pb2_grpc
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.product.v1 import events_pb2 as product_events
from shop.user.v1 import events_pb2 as user_events

from mesh.config import USER_METADATA_KEY
from mesh.events import Event, NatsEventBus
from mesh.identity import IdentityFiles, channel_credentials
from mesh.supervisor import EtcdServer, NatsServer
from services.common.messaging import new_event
from tests.harness.http import fetch
from tests.harness.mesh import MeshHarness, write_config

CHEAP_HASHES = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
NOTIFICATION_REPLICAS = ("notification-1", "notification-2")
WAIT = 20.0  # seconds any condition below may take to come true


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
    bus: NatsEventBus,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("notification-audit"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"notification": 2, "audit": 1, "auth": 1, "edge": 1},
        overrides={
            "events": {"broker": "nats", "endpoint": broker.endpoint},
            "services": {
                "notification": {"replicas": 2, "port": 0, "metrics_port": 0},
                "audit": {"replicas": 1, "port": 0, "metrics_port": 0},
                "auth": {"port": 0, "metrics_port": 0, "settings": CHEAP_HASHES},
            },
        },
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def notifications(mesh: MeshHarness) -> Any:
    return notification_pb2_grpc.NotificationServiceStub(mesh.client().channel("notification"))


@pytest.fixture(scope="module")
async def as_edge(mesh: MeshHarness) -> Any:
    """NotificationService called with the edge's identity, as the edge calls it."""
    return notification_pb2_grpc.NotificationServiceStub(
        mesh.client("edge").channel("notification")
    )


@pytest.fixture(scope="module")
async def audit(mesh: MeshHarness) -> Any:
    return audit_pb2_grpc.AuditServiceStub(mesh.client().channel("audit"))


@pytest.fixture(scope="module")
async def replicas(mesh: MeshHarness) -> AsyncIterator[list[Any]]:
    """A NotificationService stub on each replica's own address, as admin."""
    credentials = channel_credentials(IdentityFiles(mesh.config.certs_dir, "admin"))
    channels = []
    for instance_id in NOTIFICATION_REPLICAS:
        endpoint = mesh.instances[instance_id].endpoint
        assert endpoint is not None
        channels.append(grpc.aio.secure_channel(endpoint.address, credentials))
    try:
        yield [notification_pb2_grpc.NotificationServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()


@pytest.fixture(scope="module")
async def edge(mesh: MeshHarness) -> str:
    endpoint = await mesh.instances["edge-1"].wait_ready(mesh.etcd)
    return endpoint.metadata["url"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def usd(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=units, nanos=nanos)


def confirmed(customer: str, order_id: str, units: int = 10) -> Event:
    message = order_events.OrderConfirmed(
        order_id=order_id, customer_id=customer, total=usd(units, 500_000_000)
    )
    return new_event(f"order-{order_id}", 2, message)


def cancelled(customer: str, order_id: str, reason: str) -> Event:
    message = order_events.OrderCancelled(
        order_id=order_id, customer_id=customer, total=usd(3), reason=reason
    )
    return new_event(f"order-{order_id}", 2, message)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def texts_of(stub: Any, user: str) -> list[str]:
    answer = await stub.ListNotifications(
        notification_pb2.ListNotificationsRequest(user_id=user, page_size=200)
    )
    return [notification.text for notification in answer.notifications]


async def until_notified(stub: Any, user: str, count: int) -> list[str]:
    """`user`'s notification texts, newest first, once there are `count`."""
    found: list[str] = []

    async def enough() -> bool:
        found[:] = await texts_of(stub, user)
        return len(found) >= count

    await eventually(enough, f"{count} notifications of {user}")
    return found


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    for packed in rpc_status.from_call(error).details:
        bad = error_details_pb2.BadRequest()
        if packed.Unpack(bad):
            return [violation.field for violation in bad.field_violations]
    raise AssertionError(f"no BadRequest in {error}")


# -- notifications -------------------------------------------------------------------------


async def test_each_kind_of_event_tells_its_user(bus: NatsEventBus, notifications: Any) -> None:
    user, other = new_id("usr"), new_id("usr")
    order_id, lost = new_id("ord"), new_id("ord")
    registered = user_events.UserRegistered(
        user_id=user, username="ada", email="ada@example.com", display_name="Ada"
    )
    refunded = payment_events.PaymentRefunded(
        payment_id=new_id("pay"), order_id=order_id, customer_id=user, amount=usd(12)
    )
    placed = order_events.OrderPlaced(order_id=order_id, customer_id=user, total=usd(12))
    await bus.publish("user", new_event(f"user-{user}", 1, registered))
    await bus.publish("order", new_event(f"order-{order_id}", 1, placed))  # tells nothing
    await bus.publish("order", confirmed(user, order_id, units=12))
    await bus.publish("order", cancelled(user, lost, "out of stock"))
    await bus.publish("payment", new_event(f"payment-{order_id}", 1, refunded))
    await bus.publish("order", confirmed(other, new_id("ord")))
    found = await until_notified(notifications, user, 4)
    assert sorted(found) == sorted(
        [
            "Welcome, Ada",
            f"Order {order_id} confirmed: 12.50 USD",
            f"Refunded 12.00 USD for order {order_id}",
            f"Order {lost} was cancelled: out of stock",
        ]
    )
    assert len(await until_notified(notifications, other, 1)) == 1
    assert len(await texts_of(notifications, user)) == 4  # OrderPlaced made none


async def test_a_users_notifications_are_listed_newest_first_in_pages(
    bus: NatsEventBus, notifications: Any
) -> None:
    user = new_id("usr")
    orders = [f"ord-{number}-{uuid.uuid4().hex[:6]}" for number in range(5)]
    for order_id in orders:  # one topic: consumed, and so numbered, in this order
        await bus.publish("order", confirmed(user, order_id))
    await until_notified(notifications, user, 5)
    pages, token = [], ""
    while True:
        answer = await notifications.ListNotifications(
            notification_pb2.ListNotificationsRequest(user_id=user, page_size=2, page_token=token)
        )
        pages.append([n.text.split()[1] for n in answer.notifications])
        assert all(n.user_id == user for n in answer.notifications)
        assert all(n.event_type == "shop.order.v1.OrderConfirmed" for n in answer.notifications)
        token = answer.next_page_token
        if not token:
            break
    newest_first = orders[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
    nobody = await notifications.ListNotifications(
        notification_pb2.ListNotificationsRequest(user_id=new_id("usr"))
    )
    assert list(nobody.notifications) == []  # an empty list, not NOT_FOUND


async def test_a_watch_on_either_replica_delivers_a_new_notification(
    bus: NatsEventBus, notifications: Any, replicas: list[Any]
) -> None:
    user = new_id("usr")
    await bus.publish("order", confirmed(user, new_id("ord")))
    await until_notified(notifications, user, 1)
    listed = await notifications.ListNotifications(
        notification_pb2.ListNotificationsRequest(user_id=user)
    )
    [old] = listed.notifications
    request = notification_pb2.WatchNotificationsRequest(user_id=user, after=old.notification_id)
    calls = [stub.WatchNotifications(request, timeout=WAIT) for stub in replicas]
    try:
        for order_id in (new_id("ord"), new_id("ord")):
            # Only one replica makes each notification; the other, waiting on its own
            # watch once the first has come, learns of the second from the file.
            await bus.publish("order", confirmed(user, order_id))
            for call in calls:
                response = await asyncio.wait_for(call.read(), WAIT)
                assert response.notification.text.startswith(f"Order {order_id} confirmed")
    finally:
        for call in calls:
            call.cancel()


async def test_a_watch_without_a_cursor_sends_only_new_notifications(
    bus: NatsEventBus, notifications: Any
) -> None:
    user = new_id("usr")
    await bus.publish("order", confirmed(user, new_id("ord")))
    await until_notified(notifications, user, 1)
    stream = notifications.WatchNotifications(
        notification_pb2.WatchNotificationsRequest(user_id=user), timeout=WAIT
    )
    # A watch that has nothing to send cannot show it is reading: keep publishing
    # until one notification comes, and check it is a new one, never the old.
    first = asyncio.ensure_future(anext(stream))
    sent: list[str] = []
    try:
        while not first.done():
            order_id = new_id("ord")
            sent.append(order_id)
            await bus.publish("order", confirmed(user, order_id))
            await asyncio.wait({first}, timeout=0.5)
        assert first.result().notification.text.split()[1] in sent
    finally:
        first.cancel()
        await asyncio.wait({first})
        await stream.aclose()


async def test_a_watch_ends_at_its_deadline(notifications: Any) -> None:
    stream = notifications.WatchNotifications(
        notification_pb2.WatchNotificationsRequest(user_id=new_id("usr")), timeout=0.5
    )
    error = await refused(anext(stream))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_an_event_delivered_again_after_the_dedupe_window_changes_nothing(
    bus: NatsEventBus, notifications: Any, audit: Any
) -> None:
    user = new_id("usr")
    first = confirmed(user, new_id("ord"))
    await bus.publish("order", first)
    await until_notified(notifications, user, 1)

    async def stored_twice() -> bool:
        # Within the window the broker drops the copy; past it, it stores it again.
        await bus.publish("order", first)
        copies = [event for event in await bus.history("order") if event.id == first.id]
        return len(copies) >= 2

    await eventually(stored_twice, "the broker to store the event a second time")
    sentinel = confirmed(user, new_id("ord"))
    await bus.publish("order", sentinel)
    # Each consumer gets a topic's events in the order the broker stored them: once the
    # sentinel is handled, so is every copy of the first event before it.
    found = await until_notified(notifications, user, 2)
    await wait_for_audit(audit, sentinel.stream, 1)

    async def all_acknowledged() -> bool:  # the copy included: it was delivered, and handled
        backlogs = [await bus.backlog("order", consumer) for consumer in ("notification", "audit")]
        return all(backlog.events == 0 for backlog in backlogs)

    await eventually(all_acknowledged, "both consumers to acknowledge every order event")
    assert len(found) == 2
    assert found == await texts_of(notifications, user)
    logged = await audit.QueryAuditLog(audit_pb2.QueryAuditLogRequest(stream=first.stream))
    assert [entry.event_id for entry in logged.entries] == [first.id]


async def test_the_edges_user_reads_only_their_own_notifications(
    bus: NatsEventBus, as_edge: Any
) -> None:
    user = new_id("usr")
    await bus.publish("order", confirmed(user, new_id("ord")))
    request = notification_pb2.ListNotificationsRequest(user_id=user)
    mine = ((USER_METADATA_KEY, user),)

    async def listed() -> bool:
        answer = await as_edge.ListNotifications(request, metadata=mine)
        return len(answer.notifications) == 1

    await eventually(listed, "the user's notification through the edge's identity")
    nobody = await refused(as_edge.ListNotifications(request))
    assert nobody.code() == grpc.StatusCode.UNAUTHENTICATED
    someone_else = ((USER_METADATA_KEY, new_id("usr")),)
    theirs = await refused(as_edge.ListNotifications(request, metadata=someone_else))
    assert theirs.code() == grpc.StatusCode.PERMISSION_DENIED
    watch = as_edge.WatchNotifications(
        notification_pb2.WatchNotificationsRequest(user_id=user),
        metadata=someone_else,
        timeout=WAIT,
    )
    assert (await refused(anext(watch))).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_bad_notification_request_names_its_fields(notifications: Any) -> None:
    listing = await refused(
        notifications.ListNotifications(
            notification_pb2.ListNotificationsRequest(
                user_id="not valid", page_size=-1, page_token="nope"
            )
        )
    )
    assert listing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(listing) == ["user_id", "page_size", "page_token"]
    watch = notifications.WatchNotifications(
        notification_pb2.WatchNotificationsRequest(user_id="", after="12"), timeout=WAIT
    )
    watching = await refused(anext(watch))
    assert watching.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(watching) == ["user_id", "after"]


# -- through the REST edge ----------------------------------------------------------------


async def sign_up(edge: str) -> tuple[str, str]:
    """A new user's id and token, through the edge."""
    account = {"username": new_id("u"), "password": "s3cret-pass"}
    headers = {"content-type": "application/json"}
    registered = await fetch(f"{edge}/v1/auth/register", "POST", json.dumps(account), headers)
    assert registered.status == 200, registered.body
    login = await fetch(f"{edge}/v1/auth/login", "POST", json.dumps(account), headers)
    assert login.status == 200, login.body
    return registered.json()["userId"], login.json()["accessToken"]


async def test_a_signed_in_user_lists_and_watches_their_notifications_over_http(
    bus: NatsEventBus, notifications: Any, edge: str
) -> None:
    user, token = await sign_up(edge)
    bearer = {"authorization": f"Bearer {token}"}
    first = new_id("ord")
    await bus.publish("order", confirmed(user, first))
    await until_notified(notifications, user, 1)
    listed = await fetch(f"{edge}/v1/users/{user}/notifications?pageSize=10", headers=bearer)
    assert listed.status == 200, listed.body
    [only] = listed.json()["notifications"]
    assert only["text"] == f"Order {first} confirmed: 10.50 USD"
    assert only["eventType"] == "shop.order.v1.OrderConfirmed"

    second = new_id("ord")
    watch = asyncio.create_task(
        fetch(
            f"{edge}/v1/users/{user}/notifications:watch?after={only['notificationId']}",
            headers={**bearer, "grpc-timeout": "3S"},
        )
    )
    await bus.publish("order", cancelled(user, second, "payment declined"))
    answer = await watch
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert [line["result"]["notification"]["text"] for line in lines[:-1]] == [
        f"Order {second} was cancelled: payment declined"
    ]
    assert lines[-1]["error"]["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]

    other_id, _ = await sign_up(edge)
    theirs = await fetch(f"{edge}/v1/users/{other_id}/notifications", headers=bearer)
    assert theirs.status == 403
    assert theirs.json()["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    anonymous = await fetch(f"{edge}/v1/users/{user}/notifications")
    assert anonymous.status == 401


# -- audit ---------------------------------------------------------------------------------


async def wait_for_audit(audit: Any, stream: str, count: int) -> list[Any]:
    found: list[Any] = []

    async def enough() -> bool:
        answer = await audit.QueryAuditLog(
            audit_pb2.QueryAuditLogRequest(stream=stream, page_size=200)
        )
        found[:] = answer.entries
        return len(found) >= count

    await eventually(enough, f"{count} audit entries of {stream}")
    return found


def at(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


async def test_the_audit_log_records_every_topic_and_filters_and_pages(
    bus: NatsEventBus, audit: Any
) -> None:
    product = new_id("sku")
    base = 978_307_200.0  # 2001-01-01: no other test's events occurred then
    published: list[tuple[str, Message, str, int]] = [
        ("product", product_events.ProductCreated(product_id=product, name="Mug", price=usd(12)), f"product-{product}", 1),
        ("inventory", inventory_events.StockChanged(product_id=product, on_hand=5, available=5, cause="adjusted"), f"stock-{product}", 1),
        ("inventory", inventory_events.StockChanged(product_id=product, on_hand=5, reserved=1, available=4, cause="reserved"), f"stock-{product}", 2),
        ("user", user_events.EmailChanged(email="a@example.com"), f"user-{product}", 2),
        ("inventory", inventory_events.StockChanged(product_id=product, on_hand=5, available=5, cause="released"), f"stock-{product}", 3),
    ]  # fmt: skip
    events = []
    for offset, (topic, message, stream, version) in enumerate(published):
        event = new_event(stream, version, message, at=base + offset)
        events.append(event)
        await bus.publish(topic, event)
    stock = await wait_for_audit(audit, f"stock-{product}", 3)
    await wait_for_audit(audit, f"product-{product}", 1)
    await wait_for_audit(audit, f"user-{product}", 1)

    assert [entry.event_id for entry in stock] == [events[1].id, events[2].id, events[4].id]
    assert [entry.version for entry in stock] == [1, 2, 3]
    first = stock[0]
    assert (first.topic, first.type) == ("inventory", "shop.inventory.v1.StockChanged")
    assert first.payload == events[1].data
    assert dict(first.data) == {
        "productId": product, "onHand": "5", "reserved": "0", "available": "5", "cause": "adjusted",
    }  # fmt: skip
    assert first.occurred_at == at(base + 1)
    assert first.recorded_at.ToNanoseconds() > 0

    async def ids(**filters: Any) -> list[str]:
        answer = await audit.QueryAuditLog(audit_pb2.QueryAuditLogRequest(page_size=200, **filters))
        return [entry.event_id for entry in answer.entries]

    window = {"since": at(base), "until": at(base + 5)}
    everything = await ids(**window)
    # Each topic's consumer records its events in order; topics interleave as they come.
    assert sorted(everything) == sorted(event.id for event in events)
    assert await ids(topic="inventory", **window) == [events[1].id, events[2].id, events[4].id]
    assert await ids(type="shop.user.v1.EmailChanged", **window) == [events[3].id]
    assert await ids(since=at(base + 1), until=at(base + 3)) == [events[1].id, events[2].id]
    assert await ids(stream=f"stock-{product}", since=at(base + 2)) == [events[2].id, events[4].id]

    pages, positions, token = [], [], ""
    while True:
        answer = await audit.QueryAuditLog(
            audit_pb2.QueryAuditLogRequest(page_size=2, page_token=token, **window)
        )
        pages.append([entry.event_id for entry in answer.entries])
        positions += [entry.position for entry in answer.entries]
        token = answer.next_page_token
        if not token:
            break
    assert pages == [everything[0:2], everything[2:4], everything[4:5]]
    assert positions == sorted(positions)


async def test_the_audit_database_refuses_to_change_or_remove_entries(
    bus: NatsEventBus, audit: Any, mesh: MeshHarness
) -> None:
    order_id = new_id("ord")
    event = confirmed(new_id("usr"), order_id)
    await bus.publish("order", event)
    [before] = await wait_for_audit(audit, event.stream, 1)
    path = mesh.config.state_dir / "data" / "audit" / "audit.db"
    with sqlite3.connect(path, timeout=5) as db:
        for change in (
            "UPDATE audit_log SET topic = 'user' WHERE event_id = ?",
            "DELETE FROM audit_log WHERE event_id = ?",
            "INSERT OR REPLACE INTO audit_log (event_id, topic, stream, version, type,"
            " occurred_at_ns, recorded_at_ns, payload, payload_json)"
            " SELECT event_id, topic, stream, version, type, 0, 0, x'', '' FROM audit_log"
            " WHERE event_id = ?",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(change, (event.id,))
    [after] = await wait_for_audit(audit, event.stream, 1)
    assert after == before


async def test_a_bad_audit_query_names_its_fields(audit: Any) -> None:
    backwards = await refused(
        audit.QueryAuditLog(audit_pb2.QueryAuditLogRequest(since=at(2_000), until=at(1_000)))
    )
    assert backwards.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(backwards) == ["until"]
    several = await refused(
        audit.QueryAuditLog(
            audit_pb2.QueryAuditLogRequest(topic="shipping", type="no spaces", page_token="x")
        )
    )
    assert violated_fields(several) == ["topic", "type", "page_token"]


async def test_the_audit_log_is_for_admin_only(mesh: MeshHarness) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(mesh.client("edge").channel("audit"))
    denied = await refused(stub.QueryAuditLog(audit_pb2.QueryAuditLogRequest()))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
