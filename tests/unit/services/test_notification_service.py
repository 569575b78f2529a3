"""The notification service's parts on a tmp_path database, without processes: the
consumer makes each event's notification once however often it is delivered, the
store pages newest first, the servicer lets the edge's user read only their own, and a
watch wakes for this instance's inserts and, through the file, another instance's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.type import money_pb2
from shop.notification.v1 import notification_pb2 as pb
from shop.order.v1 import events_pb2 as order_events
from shop.user.v1 import events_pb2 as user_events

from mesh.events import Event
from mesh.problems import InvalidArgument, PermissionDenied, Unauthenticated
from mesh.server import Caller
from mesh.tasks import cancel_and_wait, start_background
from services.common.messaging import new_event
from services.notification.changes import Changes, follow_commits
from services.notification.consumer import NotificationConsumer
from services.notification.domain import Draft
from services.notification.servicer import NotificationServicer
from services.notification.store import NotificationStore

START_NS = 1_700_000_000 * 10**9
ADMIN = Caller(identity="admin", user=None)
CONTEXT: Any = None  # the servicers' fake caller_of never looks at it


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NotificationStore]:
    ticks = itertools.count(START_NS, 1_000_000)
    store = NotificationStore(tmp_path / "notification.db", clock=lambda: next(ticks))
    yield store
    store.close()


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
def consumer(store: NotificationStore, changes: Changes) -> NotificationConsumer:
    return NotificationConsumer(store, changes)


def servicer(store: NotificationStore, changes: Changes, caller: Caller) -> NotificationServicer:
    return NotificationServicer(store, changes, caller_of=lambda _: caller)


def confirmed(customer: str, order_id: str | None = None) -> Event:
    order_id = order_id or f"ord-{uuid.uuid4().hex[:8]}"
    message = order_events.OrderConfirmed(
        order_id=order_id,
        customer_id=customer,
        total=money_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000),
    )
    return new_event(f"order-{order_id}", 2, message)


def texts(response: pb.ListNotificationsResponse) -> list[str]:
    return [notification.text for notification in response.notifications]


async def test_a_redelivered_event_makes_one_notification(
    store: NotificationStore, consumer: NotificationConsumer
) -> None:
    event = confirmed("ada", "ord-1")
    await consumer.handle(event)
    await consumer.handle(event)  # the bus delivers at least once
    found, _ = store.page("ada", before=None, limit=10)
    assert [n.text for n in found] == ["Order ord-1 confirmed: 9.99 EUR"]
    assert store.add(event, Draft("ada", "again")) is False


async def test_events_that_tell_nothing_or_do_not_parse_are_skipped(
    store: NotificationStore, consumer: NotificationConsumer
) -> None:
    placed = new_event("order-ord-9", 1, order_events.OrderPlaced(order_id="ord-9"))
    await consumer.handle(placed)
    broken = Event(
        id="e-broken",
        stream="user-usr-1",
        type="shop.user.v1.UserRegistered",
        data=b"\xff\xff\xff",
        occurred_at=1.0,
        version=1,
    )
    await consumer.handle(broken)  # logged, not raised: it would block the topic
    assert store.newest_seq() == 0


async def test_a_list_is_newest_first_in_pages(
    store: NotificationStore, changes: Changes, consumer: NotificationConsumer
) -> None:
    for number in range(5):
        await consumer.handle(confirmed("ada", f"ord-{number}"))
    await consumer.handle(confirmed("bob", "ord-bob"))
    service = servicer(store, changes, ADMIN)
    first = await service.ListNotifications(
        pb.ListNotificationsRequest(user_id="ada", page_size=2), CONTEXT
    )
    assert [n.text.split()[1] for n in first.notifications] == ["ord-4", "ord-3"]
    assert first.notifications[0].create_time.ToNanoseconds() > START_NS
    second = await service.ListNotifications(
        pb.ListNotificationsRequest(user_id="ada", page_size=2, page_token=first.next_page_token),
        CONTEXT,
    )
    third = await service.ListNotifications(
        pb.ListNotificationsRequest(user_id="ada", page_size=2, page_token=second.next_page_token),
        CONTEXT,
    )
    assert [n.text.split()[1] for n in [*second.notifications, *third.notifications]] == [
        "ord-2", "ord-1", "ord-0",
    ]  # fmt: skip
    assert third.next_page_token == ""
    empty = await service.ListNotifications(pb.ListNotificationsRequest(user_id="nobody"), CONTEXT)
    assert list(empty.notifications) == []


@pytest.mark.parametrize(
    ("caller", "problem"),
    [
        (Caller(identity="edge", user=None), Unauthenticated),
        (Caller(identity="edge", user="bob"), PermissionDenied),
    ],
)
async def test_the_edges_user_reads_only_their_own(
    store: NotificationStore, changes: Changes, caller: Caller, problem: type[Exception]
) -> None:
    service = servicer(store, changes, caller)
    with pytest.raises(problem):
        await service.ListNotifications(pb.ListNotificationsRequest(user_id="ada"), CONTEXT)
    with pytest.raises(problem):
        await anext(
            service.WatchNotifications(pb.WatchNotificationsRequest(user_id="ada"), CONTEXT)
        )


async def test_the_edges_user_reads_their_own_and_admin_anyones(
    store: NotificationStore, changes: Changes, consumer: NotificationConsumer
) -> None:
    await consumer.handle(confirmed("ada"))
    for caller in (
        Caller(identity="edge", user="ada"),
        ADMIN,
        Caller(identity="order", user=None),
    ):
        listed = await servicer(store, changes, caller).ListNotifications(
            pb.ListNotificationsRequest(user_id="ada"),
            CONTEXT,
        )
        assert len(listed.notifications) == 1


async def test_validation_comes_first(store: NotificationStore, changes: Changes) -> None:
    service = servicer(store, changes, Caller(identity="edge", user=None))
    with pytest.raises(InvalidArgument):
        await service.ListNotifications(
            pb.ListNotificationsRequest(user_id="", page_size=-1), CONTEXT
        )


@contextlib.asynccontextmanager
async def watching(
    service: NotificationServicer, request: pb.WatchNotificationsRequest
) -> AsyncIterator[asyncio.Queue[pb.Notification]]:
    """The watch's notifications piped into a queue, until the block ends."""
    queue: asyncio.Queue[pb.Notification] = asyncio.Queue()

    async def pipe() -> None:
        async for response in service.WatchNotifications(request, CONTEXT):
            queue.put_nowait(response.notification)

    task = start_background(pipe(), "watch")
    try:
        yield queue
    finally:
        await cancel_and_wait(task)


async def nothing_more(queue: asyncio.Queue[Any]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), timeout=0.2)


async def test_a_watch_sends_what_came_after_its_cursor_then_new_ones(
    store: NotificationStore, changes: Changes, consumer: NotificationConsumer
) -> None:
    for number in range(3):
        await consumer.handle(confirmed("ada", f"ord-{number}"))
    await consumer.handle(confirmed("bob"))
    service = servicer(store, changes, Caller(identity="edge", user="ada"))
    oldest = (
        await service.ListNotifications(pb.ListNotificationsRequest(user_id="ada"), CONTEXT)
    ).notifications[-1]
    request = pb.WatchNotificationsRequest(user_id="ada", after=oldest.notification_id)
    async with watching(service, request) as queue:
        sent = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
        assert [n.text.split()[1] for n in sent] == ["ord-1", "ord-2"]
        await nothing_more(queue)
        await consumer.handle(confirmed("bob"))  # another user's: not sent
        await consumer.handle(confirmed("ada", "ord-new"))
        fresh = await asyncio.wait_for(queue.get(), 5)
        assert fresh.text.startswith("Order ord-new ")
        await nothing_more(queue)


async def test_a_watch_without_a_cursor_sends_only_new_ones(
    store: NotificationStore, changes: Changes, consumer: NotificationConsumer
) -> None:
    await consumer.handle(confirmed("ada", "ord-old"))
    service = servicer(store, changes, ADMIN)
    async with watching(service, pb.WatchNotificationsRequest(user_id="ada")) as queue:
        await nothing_more(queue)
        await consumer.handle(confirmed("ada", "ord-new"))
        assert (await asyncio.wait_for(queue.get(), 5)).text.startswith("Order ord-new ")


async def test_a_watch_sees_another_instances_insert_through_the_file(
    tmp_path: Path, store: NotificationStore, changes: Changes
) -> None:
    other = NotificationStore(store.path)  # another replica, on the same file
    follower = start_background(follow_commits(store.data_version, changes, every=0.02), "f")
    try:
        service = servicer(store, changes, ADMIN)
        async with watching(service, pb.WatchNotificationsRequest(user_id="ada")) as queue:
            await nothing_more(queue)
            registered = user_events.UserRegistered(user_id="ada", display_name="Ada")
            event = new_event("user-ada", 1, registered)
            assert await asyncio.to_thread(other.add, event, Draft("ada", "Welcome, Ada"))
            assert (await asyncio.wait_for(queue.get(), 5)).text == "Welcome, Ada"
    finally:
        await cancel_and_wait(follower)
        other.close()


async def test_a_ticket_taken_before_a_ring_is_woken_by_it(changes: Changes) -> None:
    ticket = changes.ticket()
    changes.ring()
    await asyncio.wait_for(ticket.wait(), 1)
    later = changes.ticket()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(later.wait(), 0.05)
