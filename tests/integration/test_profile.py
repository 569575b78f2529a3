"""The profile read model as real processes: the user service publishes its events
through its outbox to a real NATS broker, and the profile service's projection follows
them. Profiles follow registrations, changes and deactivations; requests are validated;
a redelivered or stale event changes nothing; a broker outage loses no change; a
rebuild from the broker's log equals the live model; and the lag shows in
GetProjectionStatus and on /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.profile.v1 import profile_pb2, profile_pb2_grpc
from shop.user.v1 import events_pb2, user_pb2, user_pb2_grpc

from mesh.events import Event, NatsEventBus
from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value

TOPIC = "user"
"""Seconds the test broker drops a republished event id: short, so that the test can
deliver an event again as a relay does after the window."""

T = TypeVar("T")


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("profile"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"user": 1, "profile": 1},
        overrides={"events": {"broker": "nats", "endpoint": broker.endpoint}},
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def users(mesh: MeshHarness) -> Any:
    return user_pb2_grpc.UserServiceStub(mesh.client().channel("user"))


@pytest.fixture(scope="module")
async def profiles(mesh: MeshHarness) -> Any:
    return profile_pb2_grpc.ProfileServiceStub(mesh.client().channel("profile"))


def new_user_id() -> str:
    return f"usr-{secrets.token_hex(8)}"


async def register(users: Any, user_id: str, name: str = "Ada") -> Any:
    return await users.RegisterUser(
        user_pb2.RegisterUserRequest(
            user_id=user_id,
            username=f"u{user_id[-8:]}",
            email=f"{user_id}@example.com",
            display_name=name,
        )
    )


async def rename(users: Any, user_id: str, name: str) -> Any:
    return await users.ChangeDisplayName(
        user_pb2.ChangeDisplayNameRequest(user_id=user_id, display_name=name)
    )


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0) -> T:
    """The first value `check` returns that is not None, polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def profile_at(profiles: Any, user_id: str, version: int) -> Any:
    """The profile of `user_id` once it reflects at least `version` of the user."""

    async def check() -> Any:
        try:
            got = await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=user_id))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return got.profile if got.profile.version >= version else None

    return await eventually(check)


async def caught_up(profiles: Any) -> Any:
    """GetProjectionStatus once the read model has applied all the broker holds."""

    async def check() -> Any:
        status = await profiles.GetProjectionStatus(profile_pb2.GetProjectionStatusRequest())
        return status if status.events_behind == 0 else None

    return await eventually(check)


async def taken(profiles: Any, user_id: str, version: int, held: asyncio.Event) -> bool:
    """Whether the holder got an event, once the user's `version` went to the holder or
    to the read model."""

    async def check() -> bool | None:
        if held.is_set():
            return True
        try:
            got = await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=user_id))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return False if got.profile.version >= version else None

    return await eventually(check)


async def all_profiles(profiles: Any, **fields: Any) -> list[Any]:
    found, token = [], ""
    while True:
        page = await profiles.ListProfiles(
            profile_pb2.ListProfilesRequest(page_size=7, page_token=token, **fields)
        )
        found += page.profiles
        token = page.next_page_token
        if not token:
            return found


async def test_a_profile_follows_its_user(users: Any, profiles: Any) -> None:
    user_id = new_user_id()
    await register(users, user_id)
    first = await profile_at(profiles, user_id, 1)
    assert (first.user_id, first.display_name, first.active) == (user_id, "Ada", True)
    assert first.username == f"u{user_id[-8:]}"
    registered_at = (
        (await users.ListUserEvents(user_pb2.ListUserEventsRequest(user_id=user_id)))
        .events[0]
        .recorded_at.ToNanoseconds()
    )
    # member_since is the registration event's time (to a microsecond: epoch seconds
    # travel as a float).
    assert abs(first.member_since.ToNanoseconds() - registered_at) < 1_000
    assert first.updated == first.member_since

    await rename(users, user_id, "Countess")
    renamed = await profile_at(profiles, user_id, 2)
    assert (renamed.display_name, renamed.active) == ("Countess", True)
    assert renamed.updated.ToNanoseconds() > first.updated.ToNanoseconds()

    # An email change is no business of a public profile: only its version moves.
    await users.ChangeEmail(user_pb2.ChangeEmailRequest(user_id=user_id, email="x@example.org"))
    emailed = await profile_at(profiles, user_id, 3)
    assert emailed.display_name == "Countess"
    assert "email" not in profile_pb2.Profile.DESCRIPTOR.fields_by_name

    gone = await users.DeactivateUser(user_pb2.DeactivateUserRequest(user_id=user_id))
    deactivated = await profile_at(profiles, user_id, gone.version)
    assert (deactivated.active, deactivated.display_name, deactivated.version) == (
        False,
        "Countess",
        4,
    )
    assert deactivated.member_since == first.member_since
    active = {p.user_id for p in await all_profiles(profiles, active_only=True)}
    every = {p.user_id for p in await all_profiles(profiles)}
    assert user_id in every
    assert user_id not in active


async def test_requests_are_validated_and_an_unknown_user_is_not_found(profiles: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id="ada"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [detail] = rpc_status.from_call(bad.value).details
    request = error_details_pb2.BadRequest()
    assert detail.Unpack(request)
    assert [v.field for v in request.field_violations] == ["user_id"]

    missing = new_user_id()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=missing))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    [detail] = rpc_status.from_call(unknown.value).details
    info = error_details_pb2.ResourceInfo()
    assert detail.Unpack(info)
    assert (info.resource_type, info.resource_name) == ("shop.profile.v1.Profile", missing)

    with pytest.raises(grpc.aio.AioRpcError) as token:
        await profiles.ListProfiles(
            profile_pb2.ListProfilesRequest(page_size=-1, page_token="b3JkZXI6Mw==")
        )
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [detail] = rpc_status.from_call(token.value).details
    assert detail.Unpack(request)
    assert {v.field for v in request.field_violations} == {"page_size", "page_token"}


async def test_paging_walks_every_profile_once_in_order(users: Any, profiles: Any) -> None:
    ids = [new_user_id() for _ in range(10)]
    for user_id in ids:
        await register(users, user_id)
    await profile_at(profiles, ids[-1], 1)
    await caught_up(profiles)
    listed = [p.user_id for p in await all_profiles(profiles)]
    assert listed == sorted(listed)
    assert len(listed) == len(set(listed))
    assert set(ids) <= set(listed)


async def test_a_redelivered_or_stale_event_changes_nothing(
    users: Any, profiles: Any, bus: NatsEventBus
) -> None:
    user_id = new_user_id()
    await register(users, user_id)
    await rename(users, user_id, "Countess")
    before = await profile_at(profiles, user_id, 2)
    applied = (await caught_up(profiles)).events_applied
    stream = f"user-{user_id}"
    published = [e for e in await bus.history(TOPIC) if e.stream == stream]
    assert [e.version for e in published] == [1, 2]
    assert events_pb2.UserRegistered.FromString(published[0].data).display_name == "Ada"

    # The same event, id and all, once the broker's dedupe window let it in again (as
    # a relay that could not mark it republishes it); and a stale event of an old
    # version with other content.
    async def stored_again() -> bool | None:
        await bus.publish(TOPIC, published[1])
        log = [e for e in await bus.history(TOPIC) if e.id == published[1].id]
        return True if len(log) >= 2 else None

    await eventually(stored_again)
    stale = events_pb2.DisplayNameChanged(display_name="Mallory")
    await bus.publish(
        TOPIC,
        dataclasses.replace(
            published[1], id=str(uuid.uuid4()), data=stale.SerializeToString(), occurred_at=1.0
        ),
    )

    status = await caught_up(profiles)
    got = await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=user_id))
    assert got.profile == before
    assert status.events_applied == applied


async def test_changes_made_while_the_broker_is_down_all_arrive(
    mesh: MeshHarness, users: Any, profiles: Any, broker: NatsServer
) -> None:
    ids = [new_user_id() for _ in range(3)]
    for user_id in ids:
        await register(users, user_id)
    for user_id in ids:
        await profile_at(profiles, user_id, 1)
    await broker.stop()
    try:
        # The user service goes on: its events wait in its outbox.
        for round_ in range(3):
            for user_id in ids:
                await rename(users, user_id, f"Name {round_}")
        await users.DeactivateUser(user_pb2.DeactivateUserRequest(user_id=ids[0]))
        with pytest.raises(grpc.aio.AioRpcError) as away:
            await profiles.GetProjectionStatus(profile_pb2.GetProjectionStatusRequest())
        assert away.value.code() == grpc.StatusCode.UNAVAILABLE
        # The read model still answers, as of before the outage.
        got = await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=ids[1]))
        assert (got.profile.display_name, got.profile.version) == ("Ada", 1)
    finally:
        await broker.start()
    first = await profile_at(profiles, ids[0], 5)
    assert (first.display_name, first.active) == ("Name 2", False)
    for user_id in ids[1:]:
        profile = await profile_at(profiles, user_id, 4)
        assert (profile.display_name, profile.active, profile.version) == ("Name 2", True, 4)
    assert mesh.instances["profile-1"].returncode is None


async def test_a_rebuilt_read_model_equals_the_live_one(
    mesh: MeshHarness, users: Any, profiles: Any, bus: NatsEventBus
) -> None:
    user_id = new_user_id()
    await register(users, user_id)
    await profile_at(profiles, user_id, 1)
    await caught_up(profiles)
    live = await all_profiles(profiles)

    rebuilt = await profiles.RebuildProjection(profile_pb2.RebuildProjectionRequest())
    assert await all_profiles(profiles) == live
    log = await bus.history(TOPIC)
    assert rebuilt.events_applied == len({(e.stream, e.version) for e in log})
    status = await profiles.GetProjectionStatus(profile_pb2.GetProjectionStatusRequest())
    assert status.events_applied == rebuilt.events_applied

    # Only admin rebuilds: mesh.yaml lets no one else reach the method.
    other = profile_pb2_grpc.ProfileServiceStub(mesh.client("user").channel("profile"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await other.RebuildProjection(profile_pb2.RebuildProjectionRequest())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_lag_shows_in_the_status_and_on_metrics(
    mesh: MeshHarness, users: Any, profiles: Any, bus: NatsEventBus
) -> None:
    """A second subscription of consumer "profile" holds one event without finishing
    it; the consumer hands out one event at a time, so the read model waits behind it
    and the events after it pile up."""
    await caught_up(profiles)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(event: Event) -> None:
        held.set()
        await release.wait()
        raise RuntimeError("handed back to the broker, for the read model to apply")

    subscription = await bus.subscribe(TOPIC, "profile", hold)
    user_id = new_user_id()
    try:
        version = (await register(users, user_id)).version
        for n in range(50):  # until the holder, not the read model, gets one
            if await taken(profiles, user_id, version, held):
                break
            version = (await rename(users, user_id, f"Ada {n}")).version
        assert held.is_set()
        piled = 5
        for n in range(piled):
            await rename(users, user_id, f"Behind {n}")

        async def behind() -> Any:
            status = await profiles.GetProjectionStatus(profile_pb2.GetProjectionStatusRequest())
            return status if status.events_behind >= piled + 1 else None

        status = await eventually(behind)
        assert status.seconds_behind > 0

        async def gauges() -> dict[str, float] | None:
            samples = scrape_instance(mesh.instances["profile-1"])
            found = {
                name: value(samples, name, projection="profile")
                for name in ("projection_lag_events", "projection_lag_seconds")
            }
            return found if found["projection_lag_events"] >= piled + 1 else None

        lag = await eventually(gauges)
        assert lag["projection_lag_seconds"] > 0
    finally:
        release.set()
        await subscription.aclose()
    final = await users.GetUser(user_pb2.GetUserRequest(user_id=user_id))
    profile = await profile_at(profiles, user_id, final.version)
    assert profile.display_name == f"Behind {piled - 1}"
    status = await caught_up(profiles)
    assert status.seconds_behind == 0

    async def gauges_clear() -> bool | None:
        samples = scrape_instance(mesh.instances["profile-1"])
        return True if value(samples, "projection_lag_events", projection="profile") == 0 else None

    await eventually(gauges_clear)
