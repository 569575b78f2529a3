"""The user service as real processes: two replicas on one event store, called as
admin. Optimistic concurrency holds between the replicas, every replica rebuilds a user
from the shared stream (snapshots included), rows an old version of the service wrote
are read upcast, and ListUserEvents pages from a version, readable in grpcurl too."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.user.v1 import events_pb2, user_pb2, user_pb2_grpc

from mesh.identity import IdentityFiles, channel_credentials
from mesh.supervisor import EtcdServer
from services.common.eventstore import EventStore, NewEvent
from tests.harness.mesh import MeshHarness, write_config

SNAPSHOT_EVERY = 3
REPLICAS = ("user-1", "user-2")


@pytest.fixture(scope="module")
async def user_mesh(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("user"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"user": 2},
        overrides={
            "services": {
                "user": {
                    "replicas": 2,
                    "port": 0,
                    "metrics_port": 0,
                    "settings": {"snapshot_every": SNAPSHOT_EVERY},
                }
            }
        },
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        yield mesh
    finally:
        await mesh.aclose()


@pytest.fixture(scope="module")
async def stub(user_mesh: MeshHarness) -> Any:
    """Through the mesh client: round-robin over both replicas."""
    return user_pb2_grpc.UserServiceStub(user_mesh.client().channel("user"))


@pytest.fixture(scope="module")
async def replicas(user_mesh: MeshHarness) -> AsyncIterator[list[Any]]:
    """A stub on each replica's own address, as admin."""
    credentials = channel_credentials(IdentityFiles(user_mesh.config.certs_dir, "admin"))
    channels = []
    for instance_id in REPLICAS:
        endpoint = user_mesh.instances[instance_id].endpoint
        assert endpoint is not None
        channels.append(grpc.aio.secure_channel(endpoint.address, credentials))
    try:
        yield [user_pb2_grpc.UserServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()


def new_user_id() -> str:
    return f"usr-{secrets.token_hex(8)}"


async def register(stub: Any, user_id: str, name: str = "Ada") -> Any:
    return await stub.RegisterUser(
        user_pb2.RegisterUserRequest(
            user_id=user_id, username="ada", email="ada@example.com", display_name=name
        )
    )


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def test_replicas_conflict_on_one_expected_version_and_one_wins(
    replicas: list[Any],
) -> None:
    user_id = new_user_id()
    await register(replicas[0], user_id)
    for version in range(1, 6):
        results = await asyncio.gather(
            *(
                stub.ChangeEmail(
                    user_pb2.ChangeEmailRequest(
                        user_id=user_id,
                        email=f"{name}-{version}@example.com",
                        expected_version=version,
                    )
                )
                for name, stub in zip(REPLICAS, replicas, strict=True)
            ),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, user_pb2.ChangeEmailResponse)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == len(lost) == 1, results
        assert won[0].version == version + 1
        assert lost[0].code() == grpc.StatusCode.ABORTED
        assert f"version {version + 1}" in (lost[0].details() or "")
        info = error_info(lost[0])
        assert (info.reason, info.metadata["current_version"]) == (
            "VERSION_CONFLICT",
            str(version + 1),
        )
    # Both replicas read the one winner of each round.
    got = [await stub.GetUser(user_pb2.GetUserRequest(user_id=user_id)) for stub in replicas]
    assert got[0] == got[1]
    assert got[0].version == 6


async def test_last_writer_wins_without_an_expected_version(replicas: list[Any]) -> None:
    user_id = new_user_id()
    await register(replicas[0], user_id)
    results = await asyncio.gather(
        *(
            replicas[n % 2].ChangeDisplayName(
                user_pb2.ChangeDisplayNameRequest(user_id=user_id, display_name=f"Writer {n}")
            )
            for n in range(6)
        )
    )
    assert sorted(r.version for r in results) == [2, 3, 4, 5, 6, 7]
    last = max(results, key=lambda r: r.version)
    got = await replicas[1].GetUser(user_pb2.GetUserRequest(user_id=user_id))
    assert (got.user, got.version) == (last.user, 7)


async def test_every_replica_rebuilds_the_user_from_the_shared_stream(
    replicas: list[Any],
) -> None:
    user_id = new_user_id()
    response = await register(replicas[1], user_id)
    version = response.version
    for n in range(10):  # alternate replicas: each snapshot one takes, the other reads
        stub = replicas[n % 2]
        if n % 3:
            response = await stub.ChangeEmail(
                user_pb2.ChangeEmailRequest(
                    user_id=user_id, email=f"ada{n}@example.com", expected_version=version
                )
            )
        else:
            response = await stub.ChangeDisplayName(
                user_pb2.ChangeDisplayNameRequest(
                    user_id=user_id, display_name=f"Ada {n}", expected_version=version
                )
            )
        version = response.version
    gone = await replicas[0].DeactivateUser(
        user_pb2.DeactivateUserRequest(user_id=user_id, reason="done", expected_version=version)
    )

    for stub in replicas:
        got = await stub.GetUser(user_pb2.GetUserRequest(user_id=user_id))
        assert (got.user, got.version) == (gone.user, 12)
    assert (gone.user.email, gone.user.display_name) == ("ada8@example.com", "Ada 9")
    assert gone.user.status == user_pb2.USER_STATUS_DEACTIVATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replicas[1].ChangeEmail(
            user_pb2.ChangeEmailRequest(user_id=user_id, email="late@example.com")
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rows_of_an_old_version_of_the_service_are_read_upcast(
    user_mesh: MeshHarness, stub: Any
) -> None:
    user_id = new_user_id()
    # As the service wrote it before schema 2, into the file the replicas share.
    old = EventStore(user_mesh.config.state_dir / "data" / "user" / "user.db")
    schema_1 = events_pb2.UserRegisteredSchema1(
        user_id=user_id, username="grace", email="grace@example.com", name="Grace Hopper"
    )
    old.append(
        f"user-{user_id}",
        0,
        [NewEvent("shop.user.v1.UserRegistered", schema_1.SerializeToString(), 1)],
    )
    old.close()

    for _ in REPLICAS:  # round-robin: both replicas
        got = await stub.GetUser(user_pb2.GetUserRequest(user_id=user_id))
        assert (got.user.display_name, got.user.username, got.version) == (
            "Grace Hopper",
            "grace",
            1,
        )
    listed = await stub.ListUserEvents(user_pb2.ListUserEventsRequest(user_id=user_id))
    [event] = listed.events
    assert event.schema_version == 2
    assert json_format.MessageToDict(event.data)["displayName"] == "Grace Hopper"
    changed = await stub.ChangeDisplayName(
        user_pb2.ChangeDisplayNameRequest(
            user_id=user_id, display_name="Rear Admiral Hopper", expected_version=1
        )
    )
    assert changed.version == 2


async def test_list_user_events_from_a_version(stub: Any) -> None:
    user_id = new_user_id()
    await register(stub, user_id)
    for n in range(2, 8):
        await stub.ChangeEmail(
            user_pb2.ChangeEmailRequest(user_id=user_id, email=f"ada{n}@example.com")
        )

    page = await stub.ListUserEvents(
        user_pb2.ListUserEventsRequest(user_id=user_id, from_version=3, page_size=2)
    )
    assert [e.version for e in page.events] == [3, 4]
    assert (page.next_from_version, page.version) == (5, 7)
    assert [json_format.MessageToDict(e.data) for e in page.events] == [
        {"email": "ada3@example.com"},
        {"email": "ada4@example.com"},
    ]
    assert {e.type for e in page.events} == {"shop.user.v1.EmailChanged"}
    rest = await stub.ListUserEvents(
        user_pb2.ListUserEventsRequest(user_id=user_id, from_version=page.next_from_version)
    )
    assert ([e.version for e in rest.events], rest.next_from_version) == ([5, 6, 7], 0)
    assert all(e.recorded_at.seconds > 0 for e in rest.events)


async def test_errors_carry_their_details(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(user_pb2.GetUserRequest(user_id=new_user_id()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert rpc_status.from_call(caught.value).details[0].Unpack(info)
    assert info.resource_type == "shop.user.v1.User"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterUser(user_pb2.RegisterUserRequest(user_id="nobody", email="x"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert rpc_status.from_call(caught.value).details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [
        "user_id",
        "username",
        "email",
        "display_name",
    ]


async def test_grpcurl_shows_events_as_plain_json(
    user_mesh: MeshHarness, stub: Any, binaries: dict[str, str]
) -> None:
    user_id = new_user_id()
    await register(stub, user_id, name="Ada Lovelace")
    certs = user_mesh.config.certs_dir
    endpoint = user_mesh.instances["user-1"].endpoint
    assert endpoint is not None
    process = await asyncio.create_subprocess_exec(
        binaries["grpcurl"], "-connect-timeout", "3", "-cacert", str(certs / "ca.crt"),
        "-cert", str(certs / "admin.crt"), "-key", str(certs / "admin.key"),
        "-d", json.dumps({"user_id": user_id}),
        endpoint.address, "shop.user.v1.UserService/ListUserEvents",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode()
    [event] = json.loads(output)["events"]
    assert event["type"] == "shop.user.v1.UserRegistered"
    assert event["data"]["displayName"] == "Ada Lovelace"
