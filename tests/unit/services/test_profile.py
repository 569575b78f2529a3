"""The profile read model on a tmp_path file, fed events directly: what each user event
does to a profile, what it skips, paging and validation, and who may rebuild it. (The
live service, with the user service and a real broker: tests/integration/test_profile.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2
from shop.profile.v1 import profile_pb2 as pb
from shop.user.v1 import events_pb2

from mesh.events import Backlog, Event, EventBus
from mesh.problems import InvalidArgument, NotFound, PermissionDenied
from mesh.server import Caller
from services.profile.commands import ProfileCommands
from services.profile.domain import ProfilesQuery, validate_list
from services.profile.queries import ProfileQueries
from services.profile.servicer import ProfileServicer
from services.profile.store import ProfileStore

ADA = "usr-00000000000000ad"
BOB = "usr-00000000000000b0"
T0 = 1_700_000_000.25


def event(user_id: str, version: int, message: Any, *, at: float = T0) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        stream=f"user-{user_id}",
        type=message.DESCRIPTOR.full_name,
        data=message.SerializeToString(),
        occurred_at=at,
        version=version,
    )


def registered(user_id: str, name: str = "Ada", *, at: float = T0) -> Event:
    return event(
        user_id,
        1,
        events_pb2.UserRegistered(
            user_id=user_id, username=name.lower(), email="x@example.com", display_name=name
        ),
        at=at,
    )


class LoggedBus:
    """The part of an EventBus a projection reads: a topic's stored events."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    async def history(self, topic: str | None = None) -> list[Event]:
        return list(self.events)

    async def backlog(self, topic: str, consumer: str) -> Backlog:
        return Backlog(events=0, newest_at=None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    store = ProfileStore(tmp_path / "profile.db")
    yield store
    store.close()


def servicer_of(store: ProfileStore, bus: LoggedBus, identity: str | None) -> ProfileServicer:
    async def get_bus() -> EventBus:
        return bus  # type: ignore[return-value]

    return ProfileServicer(
        ProfileQueries(store, get_bus),
        ProfileCommands(store.projection, get_bus),
        caller_of=lambda _: Caller(identity=identity, user=None),
    )


def store_query(*, active_only: bool = False) -> ProfilesQuery:
    return validate_list(0, "", active_only)


def apply(store: ProfileStore, *events: Event) -> list[bool]:
    return [store.projection.handle("user", e) for e in events]


def test_a_profile_follows_its_user_and_shows_no_email(store: ProfileStore) -> None:
    apply(
        store,
        registered(ADA),
        event(ADA, 2, events_pb2.DisplayNameChanged(display_name="Countess"), at=T0 + 1),
        event(ADA, 3, events_pb2.EmailChanged(email="new@example.com"), at=T0 + 2),
    )
    profile = store.get(ADA)
    assert profile is not None
    assert (profile.username, profile.display_name, profile.active) == ("ada", "Countess", True)
    assert (profile.member_since, profile.updated, profile.version) == (T0, T0 + 2, 3)
    assert "email" not in pb.Profile.DESCRIPTOR.fields_by_name
    apply(store, event(ADA, 4, events_pb2.UserDeactivated(reason="left"), at=T0 + 3))
    gone = store.get(ADA)
    assert gone is not None
    assert (gone.active, gone.display_name, gone.version) == (False, "Countess", 4)


def test_a_redelivered_or_older_event_changes_nothing(store: ProfileStore) -> None:
    first = registered(ADA)
    rename = event(ADA, 2, events_pb2.DisplayNameChanged(display_name="Countess"))
    assert apply(store, first, rename) == [True, True]
    before = store.get(ADA)
    assert apply(store, rename, first) == [False, False]
    assert store.get(ADA) == before
    assert store.projection.applied() == 2


@pytest.mark.parametrize(
    "bad",
    [
        Event("e1", f"user-{BOB}", "shop.user.v1.UserRegistered", b"\xff\xff", T0, 1),
        Event("e2", f"user-{BOB}", "shop.user.v1.PasswordChanged", b"", T0, 1),
        Event("e3", "user-bob", "shop.user.v1.UserRegistered", b"", T0, 1),
        event(BOB, 1, events_pb2.UserRegistered(user_id=ADA, username="a")),
        event(BOB, 1, events_pb2.UserRegistered(user_id=BOB)),
        event(BOB, 1, events_pb2.DisplayNameChanged(display_name="Bob")),
    ],
    ids=["garbage", "unknown-type", "bad-stream", "other-user", "no-username", "no-profile"],
)
def test_an_event_it_cannot_read_is_skipped(store: ProfileStore, bad: Event) -> None:
    assert apply(store, bad) == [True]  # applied as far as the stream goes: not retried
    assert store.get(BOB) is None
    assert store.page(store_query()) == ([], None)


def test_a_registration_without_a_display_name_shows_the_username(store: ProfileStore) -> None:
    # A schema-1 payload: its `name` (field 4) is reserved in schema 2.
    old = events_pb2.UserRegisteredSchema1(user_id=BOB, username="bob", name="Robert")
    apply(
        store,
        Event("e", f"user-{BOB}", "shop.user.v1.UserRegistered", old.SerializeToString(), T0, 1),
    )
    profile = store.get(BOB)
    assert profile is not None
    assert profile.display_name == "bob"


async def test_list_pages_in_user_id_order_and_filters_inactive(
    store: ProfileStore, context: Any
) -> None:
    ids = [f"usr-{n:016x}" for n in range(1, 8)]
    for user_id in ids:
        apply(store, registered(user_id))
    apply(store, event(ids[2], 2, events_pb2.UserDeactivated()))
    servicer = servicer_of(store, LoggedBus([]), None)
    seen, token = [], ""
    while True:
        page = await servicer.ListProfiles(
            pb.ListProfilesRequest(page_size=3, page_token=token), context
        )
        seen.append([p.user_id for p in page.profiles])
        token = page.next_page_token
        if not token:
            break
    assert seen == [ids[0:3], ids[3:6], ids[6:7]]
    active = await servicer.ListProfiles(pb.ListProfilesRequest(active_only=True), context)
    assert [p.user_id for p in active.profiles] == [u for u in ids if u != ids[2]]


async def test_get_validates_and_is_not_found(store: ProfileStore, context: Any) -> None:
    servicer = servicer_of(store, LoggedBus([]), None)
    with pytest.raises(InvalidArgument) as bad:
        await servicer.GetProfile(pb.GetProfileRequest(user_id="ada"), context)
    [detail] = bad.value.to_status().details
    request = error_details_pb2.BadRequest()
    assert detail.Unpack(request)
    assert [v.field for v in request.field_violations] == ["user_id"]
    with pytest.raises(NotFound):
        await servicer.GetProfile(pb.GetProfileRequest(user_id=ADA), context)
    with pytest.raises(InvalidArgument):
        await servicer.ListProfiles(pb.ListProfilesRequest(page_token="nope"), context)
    apply(store, registered(ADA))
    got = await servicer.GetProfile(pb.GetProfileRequest(user_id=ADA), context)
    assert got.profile.member_since.ToNanoseconds() == round(T0 * 1e9)


async def test_only_admin_rebuilds_and_a_rebuild_equals_the_live_model(
    store: ProfileStore, context: Any
) -> None:
    log = [
        registered(ADA),
        registered(BOB, "Bob"),
        event(ADA, 2, events_pb2.DisplayNameChanged(display_name="Countess")),
        event(BOB, 2, events_pb2.UserDeactivated()),
    ]
    apply(store, *log)
    live = store.page(store_query())
    bus = LoggedBus(log)
    with pytest.raises(PermissionDenied) as denied:
        await servicer_of(store, bus, "edge").RebuildProjection(
            pb.RebuildProjectionRequest(), context
        )
    assert denied.value.code.name == "PERMISSION_DENIED"
    rebuilt = await servicer_of(store, bus, "admin").RebuildProjection(
        pb.RebuildProjectionRequest(), context
    )
    assert rebuilt.events_applied == 4
    assert store.page(store_query()) == live
    status = await servicer_of(store, bus, None).GetProjectionStatus(
        pb.GetProjectionStatusRequest(), context
    )
    assert (status.events_behind, status.events_applied) == (0, 4)
