"""services.auth.keys: RS256 key pairs and their kids, which key signs and which are
published, and a KeyRing rotating on a real store with a fake clock."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.auth import keys
from services.auth.keys import KeyRing, SigningKey
from services.auth.store import AuthStore

TTL = 900
INTERVAL = 86_400
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def generated() -> SigningKey:
    return keys.generate_signing_key(T0)


def fake(kid: str, created_at: float, retired_at: float | None = None) -> SigningKey:
    return SigningKey(kid, b"", "n", "AQAB", created_at, retired_at)


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_the_thumbprint_of_rfc_7638s_example() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
        "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
        "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert keys.thumbprint(n, "AQAB") == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_generated_key_is_rsa_2048_named_by_its_thumbprint(generated: SigningKey) -> None:
    private = serialization.load_pem_private_key(generated.private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    numbers = private.public_key().public_numbers()
    assert (b64url_int(generated.n), b64url_int(generated.e)) == (numbers.n, numbers.e)
    assert generated.e == "AQAB"
    assert "=" not in generated.n
    assert generated.kid == keys.thumbprint(generated.n, generated.e)
    assert generated.created_at == T0
    assert generated.retired_at is None


def test_the_jwk_is_a_public_rs256_signing_key(generated: SigningKey) -> None:
    jwk = generated.jwk()
    assert jwk == {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": generated.kid,
        "n": generated.n,
        "e": "AQAB",
    }
    public = jwt.PyJWK(jwk).key
    assert isinstance(public, rsa.RSAPublicKey)


def test_the_newest_active_key_signs() -> None:
    old, newer = fake("old", 1.0, retired_at=5.0), fake("newer", 5.0)
    assert keys.signing_key([old, newer]) is newer
    assert keys.signing_key([old]) is None
    assert keys.signing_key([]) is None
    assert keys.signing_key([fake("a", 1.0), fake("b", 2.0)]).kid == "b"  # type: ignore[union-attr]


def test_rotation_is_due_after_the_interval_or_without_a_key() -> None:
    key = fake("k", 100.0)
    assert not keys.rotation_due(key, 100.0 + INTERVAL - 1, INTERVAL)
    assert keys.rotation_due(key, 100.0 + INTERVAL, INTERVAL)
    assert keys.rotation_due(None, 0.0, INTERVAL)


def test_retired_keys_are_published_until_their_tokens_expire() -> None:
    oldest = fake("oldest", 0.0, retired_at=10.0)
    old = fake("old", 10.0, retired_at=20.0)
    current = fake("current", 20.0)
    ring = [oldest, old, current]

    assert [k.kid for k in keys.published(ring, 20.0, TTL)] == ["current", "old", "oldest"]
    assert [k.kid for k in keys.published(ring, 10.0 + TTL - 0.1, TTL)] == [
        "current",
        "old",
        "oldest",
    ]
    assert [k.kid for k in keys.published(ring, 10.0 + TTL, TTL)] == ["current", "old"]
    assert [k.kid for k in keys.published(ring, 20.0 + TTL, TTL)] == ["current"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuthStore]:
    store = AuthStore(tmp_path / "auth.db")
    try:
        yield store
    finally:
        store.close()


def ring(store: AuthStore, clock: Clock) -> KeyRing:
    return KeyRing(store, token_ttl=TTL, rotation_interval=INTERVAL, clock=clock)


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verify(token: str, published: list[SigningKey]) -> dict[str, object]:
    """`token`'s claims, checked with the key the published JWKS lists for its kid."""
    jwks = jwt.PyJWKSet.from_dict({"keys": [key.jwk() for key in published]})
    key = jwks[kid_of(token)]
    claims: dict[str, object] = jwt.decode(
        token, key, algorithms=["RS256"], options={"verify_exp": False, "verify_aud": False}
    )
    return claims


async def test_the_first_key_is_made_when_needed(store: AuthStore) -> None:
    keyring = ring(store, Clock())
    assert keyring.published() == []
    key = await keyring.current()
    assert keyring.published() == [key]
    assert await keyring.current() == key  # not again


async def test_a_token_names_and_verifies_with_its_key(store: AuthStore) -> None:
    keyring = ring(store, Clock())
    token = await keyring.sign({"sub": "usr-1"})
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "kid": (await keyring.current()).kid,
        "typ": "JWT",
    }
    assert verify(token, keyring.published()) == {"sub": "usr-1"}


async def test_a_key_rotates_by_itself_after_the_interval(store: AuthStore) -> None:
    clock = Clock()
    keyring = ring(store, clock)
    first = await keyring.sign({"sub": "a"})

    clock.now = T0 + INTERVAL - 1
    assert kid_of(await keyring.sign({"sub": "b"})) == kid_of(first)
    clock.now = T0 + INTERVAL
    second = await keyring.sign({"sub": "c"})

    assert kid_of(second) != kid_of(first)
    published = keyring.published()
    assert [k.kid for k in published] == [kid_of(second), kid_of(first)]
    assert verify(first, published) == {"sub": "a"}
    assert verify(second, published) == {"sub": "c"}


async def test_rotating_retires_the_signing_key_until_its_tokens_expire(
    store: AuthStore,
) -> None:
    clock = Clock()
    keyring = ring(store, clock)
    old = await keyring.sign({"sub": "a"})
    clock.now = T0 + 100
    new_kid = await keyring.rotate()

    assert new_kid != kid_of(old)
    assert kid_of(await keyring.sign({"sub": "b"})) == new_kid
    clock.now = T0 + 100 + TTL - 1  # a token the old key signed at T0 + 100 lives until now
    assert verify(old, keyring.published()) == {"sub": "a"}
    clock.now = T0 + 100 + TTL
    assert [k.kid for k in keyring.published()] == [new_kid]
    with pytest.raises(KeyError):
        verify(old, keyring.published())


async def test_a_rotation_forgets_keys_whose_tokens_have_all_expired(store: AuthStore) -> None:
    clock = Clock()
    keyring = ring(store, clock)
    first = (await keyring.current()).kid
    clock.now = T0 + 10
    second = await keyring.rotate()
    clock.now = T0 + 10 + TTL + 1
    third = await keyring.rotate()
    assert {key.kid for key in store.signing_keys()} == {second, third}
    assert first not in {key.kid for key in store.signing_keys()}


async def test_replicas_share_keys_and_rotate_once(tmp_path: Path) -> None:
    clock = Clock()
    stores = [AuthStore(tmp_path / "auth.db"), AuthStore(tmp_path / "auth.db")]
    try:
        one, two = (ring(store, clock) for store in stores)
        first = await one.current()
        assert await two.current() == first

        clock.now = T0 + INTERVAL  # both due: the second finds the first's new key
        rotated = await one.current()
        assert await two.current() == rotated
        assert len(stores[0].signing_keys()) == 2

        explicit = await two.rotate()
        assert (await one.current()).kid == explicit
    finally:
        for store in stores:
            store.close()
