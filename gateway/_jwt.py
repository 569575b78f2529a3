"""The edge's check of a bearer token: an RS256 JWT from the auth service, verified
against the auth service's JWKS. No gRPC: the edge hands the verifier a coroutine
function that fetches the JWKS document (the JSON of auth's GetJwks answer).

A token is accepted only if all of these hold (RFC 7519, RFC 8725):
- it is at most MAX_TOKEN_BYTES long (longer ones are refused before any parsing);
- its header says `alg: RS256`: `none`, every HMAC algorithm (HS256 signed with the RSA
  public key as the secret included) and any other algorithm are refused before a key
  is looked up, and the key is an RSA public key, never a secret;
- its header has a `kid` that the JWKS lists, and that key's signature checks out;
- `exp` is present and not past, `nbf` (if present) is not ahead, each with `leeway`
  seconds for clock skew; `iss` and `aud` are present and the expected ones; `sub` is
  present and not empty.

Errors (neither echoes the token or any part of it):

    Exception
     ├── TokenRejected     the token is not acceptable: HTTP 401 with
     │                     `WWW-Authenticate: Bearer error="<error>"` (RFC 6750)
     └── JwksUnavailable   no key set could be fetched yet: not the token's fault, so
                           HTTP 503, and the caller may retry

The JWKS is cached. A token with a kid the cache lacks makes the verifier fetch the
JWKS again, at most once per `min_refetch_interval` (a flood of forged kids cannot
hammer the auth service; it is refused from the cache meanwhile), and concurrent
fetches coalesce into one. A cache older than `jwks_max_age` is refreshed in the
background (keys removed from the JWKS stop verifying). A failed fetch keeps the
cache; with no cache yet, fetches are retried at most once a second and verify raises
JwksUnavailable. A fetched document with no usable key counts as a failed fetch, since
the auth service always publishes the key that signs.

NOTE: after auth rotates its key, a token from the new key is refused until the next
fetch, which can be up to `min_refetch_interval` away if one happened just before.

Verified tokens are cached too (RSA verification is the main cost of a request), in a
bounded LRU keyed by the token, each until its `exp` or for `cache_ttl`, whichever
comes first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ALGORITHM",
    "MAX_TOKEN_BYTES",
    "MIN_KEY_BITS",
    "JwksUnavailable",
    "TokenRejected",
    "TokenVerifier",
    "VerifiedToken",
    "parse_jwks",
]

log = logging.getLogger("gateway.jwt")

ALGORITHM = "RS256"
"""The one algorithm accepted."""
MAX_TOKEN_BYTES = 8192
"""Longest token looked at; auth's tokens are well under 1 KiB."""
MIN_KEY_BITS = 2048
"""Smallest RSA key a JWKS may list (smaller ones are ignored)."""
MAX_KID = 256
"""Longest key id looked up."""
MAX_JWKS_KEYS = 100
"""Keys of a JWKS looked at; auth publishes a handful."""
_MAX_SUBJECT = 256
_RETRY_WITHOUT_KEYS = 1.0
"""Seconds between fetch attempts while no JWKS has ever been fetched."""
_REQUIRED = ["exp", "iss", "aud", "sub"]


class TokenRejected(Exception):
    """The token is not acceptable.

    Attributes:
        reason: what was wrong, short and safe to show to the caller (it quotes
            nothing from the token).
        error: the RFC 6750 error code for `WWW-Authenticate`.
    """

    def __init__(self, reason: str, *, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class JwksUnavailable(Exception):
    """No JWKS has been fetched yet (and the last fetch failed), so no token can be
    checked: the edge answers 503, not 401."""


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check."""

    subject: str
    """`sub`: the user id."""
    name: str
    """`name`: the username ("" if the token has none)."""
    expires_at: float
    """`exp`, in Unix seconds."""
    claims: Mapping[str, object]
    """Every claim of the token, read-only."""


def parse_jwks(document: bytes | str) -> dict[str, rsa.RSAPublicKey]:
    """The usable keys of a JWKS document (RFC 7517 section 5), by kid: RSA keys of at
    least MIN_KEY_BITS, for signatures (`use` absent or "sig"), for RS256 (`alg` absent
    or "RS256"), with a kid. Other keys are skipped; of two keys with one kid, the
    first counts.

    Raises:
        ValueError: the document is not JSON, or not an object with a `keys` list.
    """
    try:
        data = json.loads(document)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("the JWKS is not JSON") from error
    if not isinstance(data, dict):
        raise ValueError("the JWKS is not a JSON object")
    entries = data.get("keys", [])  # proto3 JSON leaves out an empty list
    if not isinstance(entries, list):
        raise ValueError("the JWKS's keys are not a list")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for entry in entries[:MAX_JWKS_KEYS]:
        found = _rsa_key(entry)
        if found is not None and found[0] not in keys:
            keys[found[0]] = found[1]
    return keys


def _rsa_key(entry: object) -> tuple[str, rsa.RSAPublicKey] | None:
    if not isinstance(entry, dict) or entry.get("kty") != "RSA":
        return None
    if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
        return None
    kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
    if not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID):
        return None
    if not (isinstance(n, str) and isinstance(e, str)):
        return None
    try:
        numbers = rsa.RSAPublicNumbers(_b64url_uint(e), _b64url_uint(n))
        key = numbers.public_key()
    except ValueError:
        return None
    return (kid, key) if key.key_size >= MIN_KEY_BITS else None


def _b64url_uint(text: str) -> int:
    """A JWK integer (base64url of big-endian bytes, RFC 7518 section 2)."""
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if not raw:
        raise binascii.Error("empty")
    return int.from_bytes(raw, "big")


class TokenVerifier:
    """Checks bearer tokens against the auth service's JWKS (see the module doc).

    Args:
        fetch_jwks: returns the JWKS document; raising means the fetch failed.
        issuer: the `iss` every token must have.
        audience: an `aud` every token must have.
        leeway: seconds of clock skew allowed on `exp` and `nbf`.
        min_refetch_interval: least seconds between two fetches of the JWKS.
        clock: Unix time now.
        jwks_max_age: seconds after which the cached JWKS is refreshed in the
            background.
        fetch_timeout: seconds one fetch may take before it counts as failed.
        cache_size: most verified tokens remembered.
        cache_ttl: most seconds a verified token is remembered.
    """

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[bytes]],
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        min_refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        jwks_max_age: float = 300.0,
        fetch_timeout: float = 5.0,
        cache_size: int = 4096,
        cache_ttl: float = 60.0,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._jwks_max_age = jwks_max_age
        self._fetch_timeout = fetch_timeout
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._keys: dict[str, rsa.RSAPublicKey] | None = None
        self._fetched_at = -math.inf
        self._attempted_at: float | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._verified: OrderedDict[str, tuple[float, VerifiedToken]] = OrderedDict()

    async def verify(self, token: str) -> VerifiedToken:
        """The token's verified claims.

        Raises:
            TokenRejected: the token fails a check.
            JwksUnavailable: no JWKS could be fetched yet.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("token too long")
        if not token.isascii():  # a compact JWS is base64url and dots: one byte a character
            raise TokenRejected("malformed token")
        now = self._clock()
        remembered = self._remembered(token, now)
        if remembered is not None:
            return remembered
        kid = _kid_of(token)
        key = await self._key(kid)
        verified = self._check(token, key, self._clock())
        self._remember(token, verified, self._clock())
        return verified

    async def aclose(self) -> None:
        """Cancel a fetch in flight, and wait for it to end."""
        if self._fetch is not None:
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetch

    # --- verified tokens

    def _remembered(self, token: str, now: float) -> VerifiedToken | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        until, verified = entry
        if now >= until:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return verified

    def _remember(self, token: str, verified: VerifiedToken, now: float) -> None:
        if self._cache_size <= 0:
            return
        self._verified[token] = (min(verified.expires_at, now + self._cache_ttl), verified)
        self._verified.move_to_end(token)
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)

    # --- the key set

    async def _key(self, kid: str) -> rsa.RSAPublicKey:
        now = self._clock()
        keys = self._keys
        if keys is not None:
            key = keys.get(kid)
            if key is not None:
                if not 0 <= now - self._fetched_at < self._jwks_max_age and self._may_fetch(now):
                    self._start_fetch(now)  # refresh in the background; this key is good
                return key
        # No key set yet, or a kid it lacks (a new key, or a forged kid).
        if self._may_fetch(now):
            self._start_fetch(now)
        if self._fetch is not None:
            await asyncio.shield(self._fetch)  # a cancelled caller leaves it running
        if self._keys is None:
            raise JwksUnavailable("the auth service's JWKS could not be fetched")
        key = self._keys.get(kid)
        if key is None:
            raise TokenRejected("unknown key id")
        return key

    def _may_fetch(self, now: float) -> bool:
        """Whether a fetch may start at `now` (none is in flight, and the last began long
        enough ago, or the clock went back)."""
        if self._fetch is not None:
            return False
        if self._attempted_at is None:
            return True
        elapsed = now - self._attempted_at
        interval = self._min_refetch_interval
        if self._keys is None:
            interval = min(interval, _RETRY_WITHOUT_KEYS)
        return elapsed < 0 or elapsed >= interval

    def _start_fetch(self, now: float) -> None:
        self._attempted_at = now
        self._fetch = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """Fetch the JWKS and replace the cached keys, or keep them on failure."""
        try:
            async with asyncio.timeout(self._fetch_timeout):
                document = await self._fetch_jwks()
            keys = parse_jwks(document)
            if not keys:
                raise ValueError("the JWKS has no usable key")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "JWKS fetch failed: %s: %s (%s)",
                type(error).__name__,
                error,
                "keeping the cached keys" if self._keys is not None else "no keys yet",
            )
        else:
            self._keys = keys
            self._fetched_at = self._clock()
        finally:
            self._fetch = None

    # --- one token

    def _check(self, token: str, key: rsa.RSAPublicKey, now: float) -> VerifiedToken:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below, against the injected clock.
                options={
                    "require": _REQUIRED,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected(f"missing claim {error.claim}") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong issuer") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        exp = _numeric(claims["exp"], "exp")
        if now >= exp + self._leeway:
            raise TokenRejected("token expired")
        if "nbf" in claims and now + self._leeway < _numeric(claims["nbf"], "nbf"):
            raise TokenRejected("token not yet valid")
        subject = claims["sub"]
        if not (
            isinstance(subject, str)
            and 0 < len(subject) <= _MAX_SUBJECT
            and subject.isascii()
            and subject.isprintable()
        ):
            raise TokenRejected("bad subject")
        name = claims.get("name", "")
        if not isinstance(name, str):
            raise TokenRejected("bad name")
        return VerifiedToken(
            subject=subject, name=name, expires_at=exp, claims=MappingProxyType(claims)
        )


def _kid_of(token: str) -> str:
    """The kid of a token whose header says RS256, before anything is verified."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRejected("malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRejected("unsupported alg")  # none, HS256 and the rest: never trusted
    kid = header.get("kid")
    if not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID):
        raise TokenRejected("missing kid")
    return kid


def _numeric(value: object, claim: str) -> float:
    """A NumericDate claim (RFC 7519 section 2) as seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(f"bad {claim}")
    return float(value)
