"""UserServicer methods called directly on a tmp_path store: encoding, errors, paging
of events, and who may act on whom through the edge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from shop.user.v1 import user_pb2 as pb

from mesh.problems import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from mesh.server import Caller
from services.user.errors import StaleVersion
from services.user.servicer import UserServicer
from services.user.store import UserStore

ADA = "usr-00000000000000ad"
BOB = "usr-00000000000000b0"
T0 = 1_700_000_000_123_456_789


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[UserStore]:
    store = UserStore(tmp_path / "user.db", snapshot_every=4, clock=lambda: T0)
    yield store
    store.close()


@pytest.fixture
def servicer(store: UserStore) -> UserServicer:
    return UserServicer(store)


def register_request(user_id: str = ADA, **fields: str) -> pb.RegisterUserRequest:
    values = {"username": "ada", "email": "ada@example.com", "display_name": "Ada"} | fields
    return pb.RegisterUserRequest(user_id=user_id, **values)


def violations(error: InvalidArgument) -> list[str]:
    [detail] = error.to_status().details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    return [violation.field for violation in bad.field_violations]


async def test_register_then_get(servicer: UserServicer, context: Any) -> None:
    registered = await servicer.RegisterUser(register_request(), context)
    got = await servicer.GetUser(pb.GetUserRequest(user_id=ADA), context)

    expected = pb.User(
        user_id=ADA,
        username="ada",
        email="ada@example.com",
        display_name="Ada",
        status=pb.USER_STATUS_ACTIVE,
    )
    assert (registered.user, registered.version) == (expected, 1)
    assert (got.user, got.version) == (expected, 1)


async def test_a_registered_user_with_other_details_already_exists(
    servicer: UserServicer, context: Any
) -> None:
    await servicer.RegisterUser(register_request(), context)
    again = await servicer.RegisterUser(register_request(), context)
    assert again.version == 1
    with pytest.raises(AlreadyExists) as caught:
        await servicer.RegisterUser(register_request(email="other@example.com"), context)
    [detail] = caught.value.to_status().details
    info = error_details_pb2.ResourceInfo()
    assert detail.Unpack(info)
    assert (info.resource_type, info.resource_name) == ("shop.user.v1.User", ADA)


async def test_changes_return_the_user_and_the_new_version(
    servicer: UserServicer, context: Any
) -> None:
    await servicer.RegisterUser(register_request(), context)
    email = await servicer.ChangeEmail(
        pb.ChangeEmailRequest(user_id=ADA, email="lovelace@example.org", expected_version=1),
        context,
    )
    name = await servicer.ChangeDisplayName(
        pb.ChangeDisplayNameRequest(user_id=ADA, display_name="Countess"), context
    )
    gone = await servicer.DeactivateUser(
        pb.DeactivateUserRequest(user_id=ADA, reason="asked to", expected_version=3), context
    )

    assert (email.user.email, email.version) == ("lovelace@example.org", 2)
    assert (name.user.display_name, name.version) == ("Countess", 3)
    assert gone.version == 4
    assert (gone.user.status, gone.user.deactivation_reason) == (
        pb.USER_STATUS_DEACTIVATED,
        "asked to",
    )
    got = await servicer.GetUser(pb.GetUserRequest(user_id=ADA), context)
    assert (got.user, got.version) == (gone.user, 4)


async def test_a_stale_expected_version_is_aborted(servicer: UserServicer, context: Any) -> None:
    await servicer.RegisterUser(register_request(), context)
    await servicer.ChangeEmail(
        pb.ChangeEmailRequest(user_id=ADA, email="b@example.com", expected_version=1), context
    )
    with pytest.raises(StaleVersion) as caught:
        await servicer.ChangeDisplayName(
            pb.ChangeDisplayNameRequest(user_id=ADA, display_name="X", expected_version=1),
            context,
        )
    assert caught.value.code.name == "ABORTED"
    assert caught.value.current_version == 2


async def test_a_deactivated_user_refuses_changes(servicer: UserServicer, context: Any) -> None:
    await servicer.RegisterUser(register_request(), context)
    await servicer.DeactivateUser(pb.DeactivateUserRequest(user_id=ADA), context)
    with pytest.raises(FailedPrecondition):
        await servicer.ChangeEmail(
            pb.ChangeEmailRequest(user_id=ADA, email="b@example.com"), context
        )
    again = await servicer.DeactivateUser(
        pb.DeactivateUserRequest(user_id=ADA, reason="again"), context
    )
    assert (again.version, again.user.deactivation_reason) == (2, "")


@pytest.mark.parametrize(
    "call",
    [
        lambda s, c: s.GetUser(pb.GetUserRequest(user_id=BOB), c),
        lambda s, c: s.ChangeEmail(pb.ChangeEmailRequest(user_id=BOB, email="b@example.com"), c),
        lambda s, c: s.ChangeDisplayName(
            pb.ChangeDisplayNameRequest(user_id=BOB, display_name="B"), c
        ),
        lambda s, c: s.DeactivateUser(pb.DeactivateUserRequest(user_id=BOB), c),
        lambda s, c: s.ListUserEvents(pb.ListUserEventsRequest(user_id=BOB), c),
    ],
    ids=["get", "email", "name", "deactivate", "events"],
)
async def test_an_unknown_user_is_not_found_with_resource_info(
    servicer: UserServicer, context: Any, call: Callable[[UserServicer, Any], Any]
) -> None:
    with pytest.raises(NotFound) as caught:
        await call(servicer, context)
    [detail] = caught.value.to_status().details
    info = error_details_pb2.ResourceInfo()
    assert detail.Unpack(info)
    assert (info.resource_type, info.resource_name) == ("shop.user.v1.User", BOB)


async def test_every_bad_field_is_a_violation(
    servicer: UserServicer, store: UserStore, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await servicer.RegisterUser(
            pb.RegisterUserRequest(user_id="u1", username="a", email="nope", display_name=""),
            context,
        )
    assert violations(caught.value) == ["user_id", "username", "email", "display_name"]
    with pytest.raises(InvalidArgument) as caught:
        await servicer.ChangeEmail(
            pb.ChangeEmailRequest(user_id=ADA, email="x" * 300, expected_version=-1), context
        )
    assert violations(caught.value) == ["email", "expected_version"]
    with pytest.raises(InvalidArgument) as caught:
        await servicer.ChangeDisplayName(
            pb.ChangeDisplayNameRequest(user_id=ADA, display_name="n" * 101), context
        )
    assert violations(caught.value) == ["display_name"]
    with pytest.raises(InvalidArgument) as caught:
        await servicer.DeactivateUser(
            pb.DeactivateUserRequest(user_id=ADA.upper(), reason="r" * 201), context
        )
    assert violations(caught.value) == ["user_id", "reason"]
    with pytest.raises(InvalidArgument) as caught:
        await servicer.GetUser(pb.GetUserRequest(), context)
    assert violations(caught.value) == ["user_id"]
    with pytest.raises(InvalidArgument) as caught:
        await servicer.ListUserEvents(
            pb.ListUserEventsRequest(user_id=ADA, from_version=-1, page_size=-1), context
        )
    assert violations(caught.value) == ["from_version", "page_size"]
    assert store.version(ADA) == 0


# -- ListUserEvents ----------------------------------------------------------------------


async def seven_events(servicer: UserServicer, context: Any) -> None:
    await servicer.RegisterUser(register_request(), context)
    for n in range(2, 8):
        await servicer.ChangeEmail(
            pb.ChangeEmailRequest(user_id=ADA, email=f"ada{n}@example.com"), context
        )


async def test_list_user_events_shows_each_event_as_json(
    servicer: UserServicer, context: Any
) -> None:
    await servicer.RegisterUser(register_request(), context)
    await servicer.DeactivateUser(pb.DeactivateUserRequest(user_id=ADA), context)
    listed = await servicer.ListUserEvents(pb.ListUserEventsRequest(user_id=ADA), context)

    assert (listed.version, listed.next_from_version) == (2, 0)
    first, second = listed.events
    assert (first.version, first.type, first.schema_version) == (
        1,
        "shop.user.v1.UserRegistered",
        2,
    )
    assert first.recorded_at.ToNanoseconds() == T0
    assert json_format.MessageToDict(first.data) == {
        "userId": ADA,
        "username": "ada",
        "email": "ada@example.com",
        "displayName": "Ada",
    }
    assert len(first.event_id) == 36
    assert (second.version, second.type) == (2, "shop.user.v1.UserDeactivated")
    assert json_format.MessageToDict(second.data) == {"reason": ""}  # every field shown


async def test_list_user_events_pages_from_a_version(servicer: UserServicer, context: Any) -> None:
    await seven_events(servicer, context)
    pages: list[list[int]] = []
    from_version = 0
    while True:
        page = await servicer.ListUserEvents(
            pb.ListUserEventsRequest(user_id=ADA, from_version=from_version, page_size=3), context
        )
        assert page.version == 7
        pages.append([event.version for event in page.events])
        if not page.next_from_version:
            break
        from_version = page.next_from_version
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]

    tail = await servicer.ListUserEvents(
        pb.ListUserEventsRequest(user_id=ADA, from_version=6), context
    )
    assert [event.version for event in tail.events] == [6, 7]
    beyond = await servicer.ListUserEvents(
        pb.ListUserEventsRequest(user_id=ADA, from_version=8), context
    )
    assert (list(beyond.events), beyond.next_from_version, beyond.version) == ([], 0, 7)
    exact = await servicer.ListUserEvents(
        pb.ListUserEventsRequest(user_id=ADA, from_version=5, page_size=3), context
    )
    assert ([e.version for e in exact.events], exact.next_from_version) == ([5, 6, 7], 0)


# -- through the edge ----------------------------------------------------------------------


def edge(user: str | None) -> Callable[[Any], Caller]:
    return lambda _: Caller(identity="edge", user=user)


def mesh_identity(name: str) -> Callable[[Any], Caller]:
    return lambda _: Caller(identity=name, user=None)


async def test_through_the_edge_a_user_acts_only_on_themselves(
    store: UserStore, context: Any
) -> None:
    mesh = UserServicer(store, caller_of=mesh_identity("admin"))
    await mesh.RegisterUser(register_request(BOB, username="bob"), context)
    ada = UserServicer(store, caller_of=edge(ADA))

    own = await ada.RegisterUser(register_request(), context)
    assert own.user.user_id == ADA
    await ada.ChangeEmail(pb.ChangeEmailRequest(user_id=ADA, email="new@example.com"), context)
    assert (await ada.GetUser(pb.GetUserRequest(user_id=ADA), context)).version == 2
    assert len((await ada.ListUserEvents(pb.ListUserEventsRequest(user_id=ADA), context)).events)

    # Bob exists, yet to Ada he is as unknown as a user who does not.
    for user_id in (BOB, "usr-00000000000000cc"):
        with pytest.raises(NotFound):
            await ada.GetUser(pb.GetUserRequest(user_id=user_id), context)
        with pytest.raises(NotFound):
            await ada.ChangeEmail(
                pb.ChangeEmailRequest(user_id=user_id, email="ada@example.com"), context
            )
        with pytest.raises(NotFound):
            await ada.ChangeDisplayName(
                pb.ChangeDisplayNameRequest(user_id=user_id, display_name="Ada"), context
            )
        with pytest.raises(NotFound):
            await ada.DeactivateUser(pb.DeactivateUserRequest(user_id=user_id), context)
        with pytest.raises(NotFound):
            await ada.ListUserEvents(pb.ListUserEventsRequest(user_id=user_id), context)
    with pytest.raises(NotFound):
        await ada.RegisterUser(register_request("usr-00000000000000cc"), context)
    assert store.version(BOB) == 1
    assert store.version("usr-00000000000000cc") == 0


async def test_mesh_identities_act_on_anyone(store: UserStore, context: Any) -> None:
    for identity in ("admin", "auth"):
        servicer = UserServicer(store, caller_of=mesh_identity(identity))
        user_id = f"usr-{identity.encode().hex():0>16}"
        await servicer.RegisterUser(register_request(user_id), context)
        changed = await servicer.ChangeDisplayName(
            pb.ChangeDisplayNameRequest(user_id=user_id, display_name=identity), context
        )
        assert changed.version == 2


async def test_through_the_edge_without_a_user_is_unauthenticated(
    store: UserStore, context: Any
) -> None:
    anonymous = UserServicer(store, caller_of=edge(None))
    with pytest.raises(Unauthenticated):
        await anonymous.RegisterUser(register_request(), context)
    with pytest.raises(Unauthenticated):
        await anonymous.GetUser(pb.GetUserRequest(user_id=ADA), context)
    assert store.version(ADA) == 0


async def test_concurrent_changes_with_one_expected_version_one_wins(
    servicer: UserServicer, context: Any
) -> None:
    await servicer.RegisterUser(register_request(), context)
    results = await asyncio.gather(
        *(
            servicer.ChangeEmail(
                pb.ChangeEmailRequest(user_id=ADA, email=f"{n}@example.com", expected_version=1),
                context,
            )
            for n in range(4)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.ChangeEmailResponse)]
    assert len(won) == 1
    assert won[0].version == 2
    assert all(isinstance(r, StaleVersion) for r in results if r not in won)
