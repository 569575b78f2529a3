"""gateway._jwt: every rule of the edge's token check, each broken by a forged token, and
the JWKS cache: refetch on an unknown kid (rate-limited, coalesced), rotation, fetch
failures, and the cache of verified tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway._jwt import (
    MAX_TOKEN_BYTES,
    JwksUnavailable,
    TokenRejected,
    TokenVerifier,
    VerifiedToken,
    parse_jwks,
)

ISSUER = "https://auth.shop.local"
AUDIENCE = "shopmesh"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Three RSA keys by kid: "a" and "b" the auth service's, "x" a stranger's."""
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "abx"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(kid: str, key: rsa.RSAPrivateKey, **extra: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
        **extra,
    }


def claims(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr-1",
        "name": "alice",
        "iat": int(T0),
        "nbf": int(T0),
        "exp": int(T0) + 900,
        "jti": "j1",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: rsa.RSAPrivateKey, kid: str | None = "a", **changes: object) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**changes), key, algorithm="RS256", headers=headers)


def unsigned(header: dict[str, object], payload: dict[str, object], signature: bytes = b"") -> str:
    """A compact JWS put together by hand, as a forger would."""
    parts = [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())]
    return ".".join([*parts, b64url(signature)])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Jwks:
    """The auth service's JWKS endpoint, as the edge's fetch function sees it."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.document: dict[str, Any] = documents[0] if documents else {"keys": []}
        self.calls = 0
        self.failing: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing is not None:
            raise self.failing
        return json.dumps(self.document).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth_jwks(keys: dict[str, rsa.RSAPrivateKey]) -> Jwks:
    return Jwks({"keys": [jwk("a", keys["a"])]})


@pytest.fixture
def verifier(auth_jwks: Jwks, clock: Clock) -> TokenVerifier:
    return make_verifier(auth_jwks, clock)


def make_verifier(fetch: Callable[[], Any], clock: Clock, **options: Any) -> TokenVerifier:
    return TokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE, clock=clock, **options)


async def rejected(verifier: TokenVerifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    assert caught.value.error == "invalid_token"
    return caught.value


async def test_a_good_token_is_verified(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    verified = await verifier.verify(sign(keys["a"]))
    assert verified == VerifiedToken(
        subject="usr-1", name="alice", expires_at=T0 + 900, claims=claims()
    )
    with pytest.raises(TypeError):
        verified.claims["sub"] = "admin"  # type: ignore[index]


async def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "a"}, claims())
    assert (await rejected(verifier, token)).reason == "unsupported alg"


@pytest.mark.parametrize("alg", ["HS256", "HS512", "RS512", "PS256", "ES256", "RS384", ""])
async def test_any_other_alg_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey], alg: str
) -> None:
    token = unsigned({"alg": alg, "kid": "a"}, claims(), b"\x01" * 256)
    assert (await rejected(verifier, token)).reason == "unsupported alg"


def hs256(header: dict[str, object], payload: dict[str, object], secret: bytes) -> str:
    signing_input = unsigned(header, payload).rstrip(".")
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.mark.parametrize("claimed_alg", ["HS256", "RS256"])
async def test_hmac_with_the_public_key_as_secret_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey], claimed_alg: str
) -> None:
    # The classic confusion attack: the public key (which anyone can fetch) used as the
    # HMAC secret. Refused by alg when the header says HS256; when it says RS256, the
    # HMAC is no RSA signature.
    public_pem = (
        keys["a"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = hs256({"alg": claimed_alg, "typ": "JWT", "kid": "a"}, claims(), public_pem)
    reason = (await rejected(verifier, token)).reason
    assert reason == ("unsupported alg" if claimed_alg == "HS256" else "bad signature")


async def test_a_token_without_kid_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    assert (await rejected(verifier, sign(keys["a"], kid=None))).reason == "missing kid"
    assert (await rejected(verifier, sign(keys["a"], kid=""))).reason == "missing kid"


async def test_an_unknown_kid_refetches_once_per_interval(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    await verifier.verify(sign(keys["a"]))
    assert auth_jwks.calls == 1

    clock.now += 31  # the JWKS was fetched long enough ago
    forged = [sign(keys["x"], kid=f"forged-{index}") for index in range(20)]
    for token in forged:
        assert (await rejected(verifier, token)).reason == "unknown key id"
    assert auth_jwks.calls == 2  # one refetch for the whole flood

    clock.now += 29
    await rejected(verifier, forged[0])
    assert auth_jwks.calls == 2
    clock.now += 1
    await rejected(verifier, forged[0])
    assert auth_jwks.calls == 3


async def test_an_unknown_kid_right_after_a_fetch_is_refused_from_the_cache(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    await verifier.verify(sign(keys["a"]))
    await rejected(verifier, sign(keys["x"], kid="x"))
    assert auth_jwks.calls == 1


async def test_an_expired_token_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = sign(keys["a"])
    clock.now = T0 + 900 + 30  # exp, plus the leeway
    assert (await rejected(verifier, token)).reason == "token expired"


async def test_the_leeway_allows_for_clock_skew(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    clock.now = T0 - 29  # nbf is 29 s ahead of us
    assert (await verifier.verify(sign(keys["a"]))).subject == "usr-1"
    clock.now = T0 + 900 + 29  # exp was 29 s ago
    assert (await verifier.verify(sign(keys["a"], jti="j2"))).subject == "usr-1"


async def test_a_token_not_yet_valid_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    clock.now = T0 - 31
    assert (await rejected(verifier, sign(keys["a"]))).reason == "token not yet valid"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"iss": None}, "missing claim iss"),
        ({"aud": "another-api"}, "wrong audience"),
        ({"aud": ["another-api"]}, "wrong audience"),
        ({"aud": None}, "missing claim aud"),
        ({"exp": None}, "missing claim exp"),
        ({"exp": "tomorrow"}, "bad exp"),
        ({"exp": True}, "bad exp"),
        ({"nbf": "now"}, "bad nbf"),
        ({"sub": None}, "missing claim sub"),
        ({"sub": ""}, "bad subject"),
        ({"sub": "usr-1\nx-admin: yes"}, "bad subject"),
        ({"name": 7}, "bad name"),
    ],
)
async def test_claims_that_break_a_rule_are_refused(
    verifier: TokenVerifier,
    keys: dict[str, rsa.RSAPrivateKey],
    changes: dict[str, object],
    reason: str,
) -> None:
    assert (await rejected(verifier, sign(keys["a"], **changes))).reason == reason


async def test_an_audience_list_holding_ours_is_accepted(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = sign(keys["a"], aud=["other", AUDIENCE])
    assert (await verifier.verify(token)).subject == "usr-1"


async def test_a_tampered_payload_has_a_bad_signature(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    header, _, signature = sign(keys["a"]).split(".")
    payload = b64url(json.dumps(claims(sub="admin")).encode())
    token = f"{header}.{payload}.{signature}"
    assert (await rejected(verifier, token)).reason == "bad signature"


async def test_another_keys_signature_under_a_known_kid_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    assert (await rejected(verifier, sign(keys["x"], kid="a"))).reason == "bad signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJSUzI1NiJ9",  # a header alone
        "W10.e30.",  # header [] (not an object)
        "ünïcode.ünïcode.ünïcode",
    ],
)
async def test_malformed_tokens_are_refused(verifier: TokenVerifier, token: str) -> None:
    assert (await rejected(verifier, token)).reason == "malformed token"


async def test_a_payload_that_is_not_an_object_is_refused(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = jwt.api_jws.encode(b"[1, 2]", keys["a"], algorithm="RS256", headers={"kid": "a"})
    assert (await rejected(verifier, token)).reason == "malformed token"


async def test_an_overlong_token_is_refused_unparsed(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = sign(keys["a"], padding="p" * MAX_TOKEN_BYTES)
    assert (await rejected(verifier, token)).reason == "token too long"
    assert auth_jwks.calls == 0  # not even the JWKS was fetched


async def test_a_rotated_key_is_fetched_and_the_old_one_still_verifies(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    old = sign(keys["a"])
    await verifier.verify(old)
    # auth rotates: "b" signs, "a" is published until its tokens have expired.
    auth_jwks.document = {"keys": [jwk("b", keys["b"]), jwk("a", keys["a"])]}
    clock.now += 60
    new = sign(keys["b"], kid="b", jti="j2")
    assert (await verifier.verify(new)).subject == "usr-1"
    assert auth_jwks.calls == 2
    assert (await verifier.verify(sign(keys["a"], jti="j3"))).subject == "usr-1"
    assert auth_jwks.calls == 2


async def test_concurrent_refetches_coalesce(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    auth_jwks.gate = asyncio.Event()
    tokens = [sign(keys["a"], jti=f"j{index}") for index in range(10)]
    waiting = [asyncio.create_task(verifier.verify(token)) for token in tokens]
    await asyncio.sleep(0.01)
    assert auth_jwks.calls == 1
    auth_jwks.gate.set()
    results = await asyncio.gather(*waiting)
    assert {result.subject for result in results} == {"usr-1"}
    assert auth_jwks.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    auth_jwks.gate = asyncio.Event()
    first = asyncio.create_task(verifier.verify(sign(keys["a"])))
    second = asyncio.create_task(verifier.verify(sign(keys["a"], jti="j2")))
    await asyncio.sleep(0.01)
    first.cancel()
    auth_jwks.gate.set()
    assert (await second).subject == "usr-1"
    assert auth_jwks.calls == 1


async def test_without_a_jwks_verify_says_it_is_unavailable(
    auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    auth_jwks.failing = ConnectionError("auth is down")
    verifier = make_verifier(auth_jwks, clock)
    with pytest.raises(JwksUnavailable):
        await verifier.verify(sign(keys["a"]))
    with pytest.raises(JwksUnavailable):
        await verifier.verify(sign(keys["a"]))
    assert auth_jwks.calls == 1  # retried no sooner than a second later

    auth_jwks.failing = None
    clock.now += 1
    assert (await verifier.verify(sign(keys["a"]))).subject == "usr-1"
    assert auth_jwks.calls == 2


async def test_a_failed_refetch_keeps_the_cached_jwks(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    await verifier.verify(sign(keys["a"]))
    auth_jwks.failing = ConnectionError("auth is down")
    clock.now += 31
    assert (await rejected(verifier, sign(keys["x"], kid="x"))).reason == "unknown key id"
    assert auth_jwks.calls == 2
    assert (await verifier.verify(sign(keys["a"], jti="j2"))).subject == "usr-1"


@pytest.mark.parametrize("document", [b"not json", b"[]", b'{"keys": {}}', b'{"keys": []}'])
async def test_a_useless_jwks_counts_as_a_failed_fetch(
    verifier: TokenVerifier,
    auth_jwks: Jwks,
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    document: bytes,
) -> None:
    await verifier.verify(sign(keys["a"]))

    async def broken() -> bytes:
        return document

    verifier._fetch_jwks = broken  # the auth service starts answering nonsense
    clock.now += 31
    await rejected(verifier, sign(keys["x"], kid="x"))
    assert (await verifier.verify(sign(keys["a"], jti="j2"))).subject == "usr-1"


async def test_a_hung_fetch_times_out(keys: dict[str, rsa.RSAPrivateKey], clock: Clock) -> None:
    hung = Jwks({"keys": [jwk("a", keys["a"])]})
    hung.gate = asyncio.Event()  # never set
    verifier = make_verifier(hung, clock, fetch_timeout=0.05)
    with pytest.raises(JwksUnavailable):
        await verifier.verify(sign(keys["a"]))


async def test_a_stale_jwks_is_refreshed_in_the_background(
    verifier: TokenVerifier, auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    await verifier.verify(sign(keys["a"]))
    auth_jwks.document = {"keys": [jwk("b", keys["b"])]}  # "a" was withdrawn
    clock.now += 301
    assert (await verifier.verify(sign(keys["a"], jti="j2"))).subject == "usr-1"  # stale, fine
    await asyncio.sleep(0)  # the refresh runs
    await asyncio.sleep(0)
    assert auth_jwks.calls == 2
    assert (await rejected(verifier, sign(keys["a"], jti="j3"))).reason == "unknown key id"


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decoded: list[str] = []
    real = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return decoded


async def test_a_verified_token_is_remembered_until_its_exp(
    verifier: TokenVerifier,
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = count_decodes(monkeypatch)
    token = sign(keys["a"], exp=int(T0) + 30)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert len(decoded) == 1
    clock.now = T0 + 30  # remembered until exp, no further, though the leeway allows it
    assert (await verifier.verify(token)).subject == "usr-1"
    assert len(decoded) == 2


async def test_remembered_tokens_are_checked_again_after_the_cache_ttl(
    auth_jwks: Jwks,
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = count_decodes(monkeypatch)
    verifier = make_verifier(auth_jwks, clock, cache_ttl=10)
    token = sign(keys["a"])
    await verifier.verify(token)
    clock.now += 9
    await verifier.verify(token)
    assert len(decoded) == 1
    clock.now += 1
    await verifier.verify(token)
    assert len(decoded) == 2


async def test_the_cache_of_verified_tokens_is_bounded(
    auth_jwks: Jwks,
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = count_decodes(monkeypatch)
    verifier = make_verifier(auth_jwks, clock, cache_size=2)
    one, two, three = (sign(keys["a"], jti=f"j{index}") for index in range(3))
    for token in (one, two, one, three):  # three evicts two, the least recently used
        await verifier.verify(token)
    assert len(decoded) == 3
    await verifier.verify(one)
    assert len(decoded) == 3
    await verifier.verify(two)
    assert len(decoded) == 4


async def test_a_refused_token_is_not_remembered(
    verifier: TokenVerifier,
    keys: dict[str, rsa.RSAPrivateKey],
    clock: Clock,
) -> None:
    token = sign(keys["a"])
    clock.now = T0 - 60
    await rejected(verifier, token)
    clock.now = T0
    assert (await verifier.verify(token)).subject == "usr-1"


def test_parse_jwks_keeps_only_rs256_signing_keys_of_2048_bits(
    keys: dict[str, rsa.RSAPrivateKey],
) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    document = {
        "keys": [
            jwk("a", keys["a"]),
            {k: v for k, v in jwk("bare", keys["b"]).items() if k not in ("use", "alg")},
            jwk("a", keys["x"]),  # a second "a": the first counts
            jwk("enc", keys["b"], use="enc"),
            jwk("ps", keys["b"], alg="PS256"),
            jwk("small", small),
            {**jwk("ec", keys["b"]), "kty": "EC"},
            {**jwk("", keys["b"])},
            {**jwk("bad-n", keys["b"]), "n": "!!"},
            {**jwk("no-e", keys["b"]), "e": None},
            "not a key",
        ]
    }
    found = parse_jwks(json.dumps(document).encode())
    assert set(found) == {"a", "bare"}
    assert found["a"].public_numbers() == keys["a"].public_key().public_numbers()


async def test_aclose_cancels_a_fetch_in_flight(
    auth_jwks: Jwks, keys: dict[str, rsa.RSAPrivateKey], clock: Clock
) -> None:
    auth_jwks.gate = asyncio.Event()
    verifier = make_verifier(auth_jwks, clock)
    waiting = asyncio.create_task(verifier.verify(sign(keys["a"])))
    await asyncio.sleep(0.01)
    await verifier.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
