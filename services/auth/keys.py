"""Signing keys: RS256 key pairs with key ids, their rotation, and the JWKS that
publishes them. No gRPC.

Every key is an RSA 2048 pair whose `kid` is its RFC 7638 thumbprint (the base64url
SHA-256 of its canonical public JWK), so a kid names exactly one public key. The newest
key that is not retired signs every token. Rotating adds a new key and retires the
others; a retired key stays in the JWKS for `token_ttl` after its retirement, long
enough for every token it signed to expire, then drops out (and is deleted at the next
rotation). Keys rotate on request (RotateSigningKey) and on their own: a token about to
be signed by a key older than the rotation interval is signed by a new key instead.

NOTE: private keys are stored in the service's SQLite database as unencrypted PEM, so
that every replica signs with the same keys. That is a development setup: in
production they would live in a KMS or an HSM, and only the public halves here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ALGORITHM",
    "KEY_SIZE",
    "KeyRing",
    "KeyStore",
    "SigningKey",
    "generate_signing_key",
    "published",
    "rotation_due",
    "signing_key",
    "thumbprint",
]

ALGORITHM = "RS256"
KEY_SIZE = 2048
_PUBLIC_EXPONENT = 65537


@dataclass(frozen=True)
class SigningKey:
    """One key pair as stored: its private half as PEM (PKCS#8), its public half as the
    JWK members `n` and `e`, and when it was made and retired (None: not yet), in Unix
    seconds."""

    kid: str
    private_pem: bytes
    n: str
    e: str
    created_at: float
    retired_at: float | None = None

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7517), ready to publish."""
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": ALGORITHM,
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        }

    def published_until(self, token_ttl: float) -> float:
        """When the key leaves the JWKS: `token_ttl` after its retirement (never while
        it signs)."""
        return math.inf if self.retired_at is None else self.retired_at + token_ttl


def _b64url_uint(value: int) -> str:
    """An unsigned integer as JWK writes it: big-endian bytes, base64url, no padding."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def thumbprint(n: str, e: str) -> str:
    """The RFC 7638 thumbprint of an RSA public key: SHA-256 over the JSON of its
    required members in lexical order, without whitespace, in base64url."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def generate_signing_key(now: float) -> SigningKey:
    """A new RSA 2048 key pair made at `now`. Takes about 0.1 s of CPU: call it in a
    thread."""
    private = rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=KEY_SIZE)
    numbers = private.public_key().public_numbers()
    n, e = _b64url_uint(numbers.n), _b64url_uint(numbers.e)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(kid=thumbprint(n, e), private_pem=pem, n=n, e=e, created_at=now)


def signing_key(keys: Sequence[SigningKey]) -> SigningKey | None:
    """The key that signs: the newest one not retired (None if there is none)."""
    active = [key for key in keys if key.retired_at is None]
    return max(active, key=lambda key: key.created_at) if active else None


def rotation_due(key: SigningKey | None, now: float, interval: float) -> bool:
    """Whether a new key must sign from `now`: there is none, or `key` has signed for
    `interval` seconds."""
    return key is None or now - key.created_at >= interval


def published(keys: Sequence[SigningKey], now: float, token_ttl: float) -> list[SigningKey]:
    """The keys the JWKS lists at `now`: the signing key first, then the retired keys
    some unexpired token may still carry, newest first."""
    current = signing_key(keys)
    others = sorted(
        (key for key in keys if key is not current and now < key.published_until(token_ttl)),
        key=lambda key: key.created_at,
        reverse=True,
    )
    return ([current] if current else []) + others


class KeyStore(Protocol):
    """Where a KeyRing keeps its keys (the auth database): shared by every replica."""

    def version(self) -> int:
        """Changes whenever any replica commits a change."""
        ...

    def signing_keys(self) -> list[SigningKey]:
        """Every stored key."""
        ...

    def rotate(
        self, key: SigningKey, *, forget_retired_before: float, unless_newer_than: float | None
    ) -> bool:
        """Store `key`, retiring every other key at `key.created_at`, and delete the keys
        retired before `forget_retired_before`, in one transaction; but if
        `unless_newer_than` is given and the signing key was made after it, change
        nothing. True if `key` was stored."""
        ...


class KeyRing:
    """The signing keys of one instance: read from its KeyStore (again whenever the
    store changes), rotated through it, and their private halves loaded once each.

    Args:
        store: where the keys live.
        token_ttl: seconds a token lives, and a retired key stays published.
        rotation_interval: seconds a key signs before the next one takes over.
        clock: Unix time now (injected by tests).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        token_ttl: float,
        rotation_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._token_ttl = token_ttl
        self._interval = rotation_interval
        self._clock = clock
        self._keys: list[SigningKey] = []
        self._keys_version: int | None = None
        self._private: dict[str, rsa.RSAPrivateKey] = {}
        self._rotating = asyncio.Lock()  # one rotation at a time in this instance

    def keys(self) -> list[SigningKey]:
        """Every stored key, read again if any replica changed the store since."""
        version = self._store.version()
        if version != self._keys_version:
            self._keys = self._store.signing_keys()
            self._keys_version = version
        return self._keys

    def published(self) -> list[SigningKey]:
        """The keys the JWKS lists now, the signing key first."""
        return published(self.keys(), self._clock(), self._token_ttl)

    async def current(self) -> SigningKey:
        """The key that signs now, after making a new one if the last is too old (or
        there is none yet)."""
        key = signing_key(self.keys())
        if key is not None and not rotation_due(key, self._clock(), self._interval):
            return key
        async with self._rotating:
            # Another call here, or another replica, may have rotated meanwhile.
            key = signing_key(self.keys())
            now = self._clock()
            if key is None or rotation_due(key, now, self._interval):
                await self._rotate(unless_newer_than=now - self._interval)
                key = signing_key(self.keys())
        assert key is not None, "a rotation leaves a signing key"
        return key

    async def rotate(self) -> str:
        """Make a new key sign from now on; returns its kid."""
        async with self._rotating:
            return await self._rotate(unless_newer_than=None)

    async def _rotate(self, *, unless_newer_than: float | None) -> str:
        key = await asyncio.to_thread(generate_signing_key, self._clock())
        forget_before = key.created_at - self._token_ttl
        await asyncio.to_thread(
            self._store.rotate,
            key,
            forget_retired_before=forget_before,
            unless_newer_than=unless_newer_than,
        )
        return key.kid

    async def sign(self, claims: Mapping[str, object]) -> str:
        """`claims` as a compact JWS signed with RS256 by the current key, whose kid its
        header names."""
        key = await self.current()
        private = self._private.get(key.kid)
        if private is None:
            private = await asyncio.to_thread(_load_private, key.private_pem)
            self._private = {key.kid: private}  # only the signing key is ever needed
        return jwt.encode(dict(claims), private, algorithm=ALGORITHM, headers={"kid": key.kid})


def _load_private(pem: bytes) -> rsa.RSAPrivateKey:
    """The private key of `pem`; checking it takes tens of milliseconds."""
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("a stored signing key is not an RSA key")
    return private
