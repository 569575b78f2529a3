"""What the user service publishes, on a tmp_path store: every appended event goes to
the outbox of topic "user" with its stream and version, upcast, and the servicer wakes
the relay after exactly the commands that appended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shop.user.v1 import events_pb2
from shop.user.v1 import user_pb2 as pb

from services.common.eventstore import NewEvent
from services.user.servicer import UserServicer
from services.user.store import UserStore, stream_of

ADA = "usr-00000000000000ad"
T0 = 1_700_000_000_123_456_789


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    store = UserStore(tmp_path / "user.db", clock=lambda: T0)
    yield store
    store.close()


def outbox(store: UserStore) -> list[tuple[Any, ...]]:
    return store.database.query(
        "SELECT event_id, topic, stream, version, type, data, occurred_at FROM outbox"
        " ORDER BY position"
    )


async def test_each_appending_command_wakes_the_relay_once(store: UserStore, context: Any) -> None:
    woken: list[None] = []
    servicer = UserServicer(store, on_appended=lambda: woken.append(None))
    register = pb.RegisterUserRequest(
        user_id=ADA, username="ada", email="ada@example.com", display_name="Ada"
    )
    await servicer.RegisterUser(register, context)
    await servicer.RegisterUser(register, context)  # a repeat: appends nothing
    await servicer.ChangeDisplayName(
        pb.ChangeDisplayNameRequest(user_id=ADA, display_name="Countess"), context
    )
    await servicer.ChangeDisplayName(
        pb.ChangeDisplayNameRequest(user_id=ADA, display_name="Countess"), context
    )
    await servicer.DeactivateUser(pb.DeactivateUserRequest(user_id=ADA), context)
    assert len(woken) == 3
    stored = store.history(ADA)
    assert outbox(store) == [
        (e.event_id, "user", stream_of(ADA), e.version, e.type, e.data, T0 / 1e9) for e in stored
    ]
    assert [row[4] for row in outbox(store)] == [
        "shop.user.v1.UserRegistered",
        "shop.user.v1.DisplayNameChanged",
        "shop.user.v1.UserDeactivated",
    ]


def test_a_schema_1_registration_is_published_upcast(store: UserStore) -> None:
    # As an old replica of the service appends it.
    old = events_pb2.UserRegisteredSchema1(
        user_id=ADA, username="ada", email="ada@example.com", name="Ada"
    )
    store.events.append(
        stream_of(ADA),
        0,
        [NewEvent("shop.user.v1.UserRegistered", old.SerializeToString(), 1)],
    )
    [row] = outbox(store)
    published = events_pb2.UserRegistered.FromString(row[5])
    assert (published.user_id, published.display_name) == (ADA, "Ada")
