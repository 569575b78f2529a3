"""AuthServicer methods called directly, on a tmp_path store and a fake clock; its tokens
are checked by the edge's TokenVerifier against the JSON of its own GetJwks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from google.protobuf import json_format
from shop.auth.v1 import auth_pb2

from gateway._jwt import TokenRejected, TokenVerifier
from mesh.problems import AlreadyExists, InvalidArgument
from services.auth.domain import Passwords
from services.auth.errors import BadCredentials
from services.auth.keys import KeyRing
from services.auth.servicer import AuthServicer
from services.auth.settings import AuthSettings
from services.auth.store import AuthStore

T0 = 1_700_000_000.0
FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 64, "argon2_parallelism": 1}
SETTINGS = AuthSettings(token_ttl=900, key_rotation_interval=86_400, **FAST)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def passwords_for(settings: AuthSettings) -> Passwords:
    return Passwords(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )


class Auth:
    """A servicer on a store, and a verifier of its tokens, all on one clock."""

    def __init__(self, store: AuthStore, settings: AuthSettings = SETTINGS) -> None:
        self.store = store
        self.clock = Clock()
        self.settings = settings
        keys = KeyRing(
            store,
            token_ttl=settings.token_ttl,
            rotation_interval=settings.key_rotation_interval,
            clock=self.clock,
        )
        self.servicer = AuthServicer(
            store, passwords_for(settings), keys, settings, clock=self.clock
        )

    async def jwks_json(self) -> bytes:
        jwks = await self.servicer.GetJwks(auth_pb2.GetJwksRequest(), None)  # type: ignore[arg-type]
        return json_format.MessageToJson(jwks).encode()

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(
            self.jwks_json,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
            leeway=0,
            min_refetch_interval=0,
            clock=self.clock,
            cache_size=0,
        )


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[Auth]:
    store = AuthStore(tmp_path / "auth.db")
    try:
        yield Auth(store)
    finally:
        store.close()


async def register(
    auth: Auth, context: Any, username: str = "Alice", password: str = "correct horse"
) -> str:
    response = await auth.servicer.Register(
        auth_pb2.RegisterRequest(username=username, password=password), context
    )
    return response.user_id


async def login(
    auth: Auth, context: Any, username: str = "alice", password: str = "correct horse"
) -> auth_pb2.LoginResponse:
    return await auth.servicer.Login(
        auth_pb2.LoginRequest(username=username, password=password), context
    )


async def test_register_then_login(auth: Auth, context: Any) -> None:
    user_id = await register(auth, context)
    response = await login(auth, context, username="ALICE")

    assert user_id.startswith("usr-")
    assert response.token_type == "Bearer"
    assert response.expires_in == 900
    verified = await auth.verifier().verify(response.access_token)
    assert verified.subject == user_id
    assert verified.name == "Alice"
    assert verified.expires_at == int(T0) + 900
    assert verified.claims["iss"] == "https://auth.shop.local"
    assert verified.claims["aud"] == "shopmesh"
    assert verified.claims["iat"] == verified.claims["nbf"] == int(T0)
    assert isinstance(verified.claims["jti"], str)


async def test_a_taken_username_in_any_case_already_exists(auth: Auth, context: Any) -> None:
    await register(auth, context)
    with pytest.raises(AlreadyExists):
        await register(auth, context, username="aLiCe", password="another password")


async def test_bad_credentials_are_invalid_arguments(auth: Auth, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await register(auth, context, username="x", password="short")
    assert {v.field for v in error.value.violations} == {"username", "password"}


async def test_a_wrong_password_and_an_unknown_user_are_unauthenticated_alike(
    auth: Auth, context: Any
) -> None:
    await register(auth, context)
    with pytest.raises(BadCredentials) as wrong:
        await login(auth, context, password="wrong horse")
    with pytest.raises(BadCredentials) as unknown:
        await login(auth, context, username="mallory")
    assert wrong.value.to_status() == unknown.value.to_status()


async def test_an_overlong_login_is_invalid(auth: Auth, context: Any) -> None:
    with pytest.raises(InvalidArgument):
        await login(auth, context, password="p" * 129)


async def test_a_hash_with_old_costs_is_replaced_at_login(tmp_path: Path, context: Any) -> None:
    store = AuthStore(tmp_path / "auth.db")
    try:
        await register(Auth(store), context)
        old_hash = store.find_user("alice").password_hash  # type: ignore[union-attr]
        stronger = SETTINGS.model_copy(update={"argon2_time_cost": 2})
        await login(Auth(store, stronger), context)
        new_hash = store.find_user("alice").password_hash  # type: ignore[union-attr]
        assert old_hash.startswith("$argon2id$v=19$m=64,t=1,p=1$")
        assert new_hash.startswith("$argon2id$v=19$m=64,t=2,p=1$")
        await login(Auth(store, stronger), context)  # the new hash checks out
    finally:
        store.close()


async def test_hashing_does_not_stall_the_event_loop(tmp_path: Path, context: Any) -> None:
    store = AuthStore(tmp_path / "auth.db")
    slow = SETTINGS.model_copy(update={"argon2_time_cost": 4, "argon2_memory_cost": 16_384})
    try:
        auth = Auth(store, slow)
        await register(auth, context)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.002)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = asyncio.get_running_loop().time()
        await login(auth, context)
        took = asyncio.get_running_loop().time() - started
        ticker.cancel()
        # The loop kept ticking while argon2 worked (a stalled loop ticks once at most).
        assert ticks >= max(3, int(took / 0.002 / 4)), (ticks, took)
    finally:
        store.close()


async def test_the_jwks_is_a_jwks_document(auth: Auth, context: Any) -> None:
    await register(auth, context)
    await login(auth, context)
    document = json.loads(await auth.jwks_json())
    assert list(document) == ["keys"]
    (key,) = document["keys"]
    assert set(key) == {"kty", "use", "alg", "kid", "n", "e"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert jwt.PyJWKSet.from_dict(document)[key["kid"]].key_type == "RSA"


async def test_the_previous_key_verifies_its_tokens_until_they_expire(
    auth: Auth, context: Any
) -> None:
    await register(auth, context)
    old = (await login(auth, context)).access_token
    auth.clock.now = T0 + 60
    rotated = await auth.servicer.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), context)
    auth.clock.now = T0 + 500
    new = (await login(auth, context)).access_token

    assert jwt.get_unverified_header(new)["kid"] == rotated.kid
    assert jwt.get_unverified_header(old)["kid"] != rotated.kid
    kids = [key["kid"] for key in json.loads(await auth.jwks_json())["keys"]]
    assert kids == [rotated.kid, jwt.get_unverified_header(old)["kid"]]

    auth.clock.now = T0 + 899  # the old token's last second
    assert (await auth.verifier().verify(old)).name == "Alice"
    assert (await auth.verifier().verify(new)).name == "Alice"

    auth.clock.now = T0 + 60 + 900  # every token of the old key has expired: it is gone
    assert [key["kid"] for key in json.loads(await auth.jwks_json())["keys"]] == [rotated.kid]
    with pytest.raises(TokenRejected):
        await auth.verifier().verify(old)
    assert (await auth.verifier().verify(new)).name == "Alice"
