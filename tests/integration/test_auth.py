"""The auth service as real processes (two replicas on one database), called through the
mesh client as admin: register, login, the JWKS, and a key rotation, with its tokens
checked by the edge's TokenVerifier against the JWKS the service serves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.auth.v1 import auth_pb2, auth_pb2_grpc

from gateway._jwt import TokenVerifier
from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config

ISSUER = "https://auth.test"
AUDIENCE = "shopmesh-test"
SETTINGS = {
    "issuer": ISSUER,
    "audience": AUDIENCE,
    # Cheap hashes, for the test only (the defaults are argon2-cffi's).
    "argon2_time_cost": 1,
    "argon2_memory_cost": 1024,
    "argon2_parallelism": 1,
}


@pytest.fixture(scope="module")
async def auth_mesh(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("auth"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"auth": 2},
        overrides={
            "services": {
                "auth": {"replicas": 2, "port": 0, "metrics_port": 0, "settings": SETTINGS}
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
async def stub(auth_mesh: MeshHarness) -> Any:
    return auth_pb2_grpc.AuthServiceStub(auth_mesh.client().channel("auth"))


def verifier(stub: Any) -> TokenVerifier:
    """The edge's verifier, fetching the JWKS from the service as the edge does."""

    async def fetch() -> bytes:
        jwks = await stub.GetJwks(auth_pb2.GetJwksRequest())
        return json_format.MessageToJson(jwks).encode()

    return TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE, min_refetch_interval=0)


def new_username() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


async def register(stub: Any, username: str, password: str = "correct horse") -> str:
    response = await stub.Register(auth_pb2.RegisterRequest(username=username, password=password))
    return str(response.user_id)


async def login(stub: Any, username: str, password: str = "correct horse") -> Any:
    return await stub.Login(auth_pb2.LoginRequest(username=username, password=password))


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_register_then_login(stub: Any) -> None:
    username = new_username()
    user_id = await register(stub, username)
    response = await login(stub, username.upper())

    assert response.token_type == "Bearer"
    assert response.expires_in == 900
    verified = await verifier(stub).verify(response.access_token)
    assert (verified.subject, verified.name) == (user_id, username)


async def test_a_taken_username_already_exists(stub: Any) -> None:
    username = new_username()
    await register(stub, username)
    error = await refused(register(stub, username.upper(), "another password"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_bad_credentials_are_invalid_with_field_violations(stub: Any) -> None:
    error = await refused(register(stub, "_x", "short"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [violation.field for violation in bad.field_violations] == ["username", "password"]


async def test_a_wrong_password_and_an_unknown_user_are_unauthenticated_alike(stub: Any) -> None:
    username = new_username()
    await register(stub, username)
    wrong = await refused(login(stub, username, "wrong horse"))
    unknown = await refused(login(stub, new_username()))
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details()


async def test_the_jwks_lists_the_kid_of_a_token(stub: Any) -> None:
    username = new_username()
    await register(stub, username)
    token = (await login(stub, username)).access_token
    jwks = json_format.MessageToDict(await stub.GetJwks(auth_pb2.GetJwksRequest()))
    assert kid_of(token) in [key["kid"] for key in jwks["keys"]]
    assert {key["alg"] for key in jwks["keys"]} == {"RS256"}


async def test_after_a_rotation_the_new_key_signs_and_old_tokens_still_verify(
    stub: Any,
) -> None:
    username = new_username()
    await register(stub, username)
    check = verifier(stub)
    old = (await login(stub, username)).access_token
    await check.verify(old)

    rotated = await stub.RotateSigningKey(auth_pb2.RotateSigningKeyRequest())

    assert rotated.kid != kid_of(old)
    new_tokens = [(await login(stub, username)).access_token for _ in range(4)]
    assert {kid_of(token) for token in new_tokens} == {rotated.kid}  # both replicas
    for token in new_tokens:
        assert (await check.verify(token)).name == username  # a kid it had to fetch
    assert (await check.verify(old)).name == username
    assert (await verifier(stub).verify(old)).name == username  # a fresh JWKS too
    kids = [key.kid for key in (await stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
    assert kids[0] == rotated.kid
    assert kid_of(old) in kids
