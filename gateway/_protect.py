"""What the edge applies to every request before any routing: a per-key rate limit, CORS
from an allow-list, and a fixed set of security headers.

All three are plain code (no I/O, no grpc, no tasks), O(1) or close to it per request, and
build everything they can once, at construction or import. Header names are lower-case, as
the rest of the edge writes them; values are ASCII and free of CR/LF by construction (no
request text reaches a header value without first matching a configured one).
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DOCS_CSP",
    "CorsPolicy",
    "RateLimit",
    "RateLimiter",
    "retry_after_header",
    "security_headers",
]

# --- Rate limiting --------------------------------------------------------------------

_MAX_RETRY_AFTER = 86_400  # seconds; a Retry-After header never says "come back next year"


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape: `burst` requests at once, refilled at `rate` per second."""

    rate: float  # tokens added per second
    burst: int  # bucket size: the most a fresh or idle client can spend at once

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"RateLimit.rate must be a positive finite number, got {self.rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"RateLimit.burst must be an int >= 1, got {self.burst!r}")


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """One token bucket per key (a client address or a user id), each created full.

    `acquire` refills the key's bucket for the time since its last call, then takes `cost`
    tokens if it holds that many. Nothing runs in the background: refill is computed lazily.

    Buckets live in an LRU of at most `max_keys` entries, so a flood of distinct keys (spoofed
    or rotated addresses) costs bounded memory: each new key past the bound evicts the least
    recently used one. Evicting a full bucket loses nothing, since a new bucket starts full.
    Evicting a drained one gives that client a fresh, full bucket. That is acceptable: it
    only happens after `max_keys` other keys were seen since that client's last request, and
    anyone who can present that many distinct keys already gets a full bucket for each new
    key, so eviction hands them nothing they did not have. A per-key limiter cannot bound an
    attacker with an unbounded key space; that needs a global limit in front (Envoy's local
    rate limit). Size `max_keys` above the number of clients active within `burst / rate`
    seconds and honest clients are never evicted while drained.

    Not thread-safe; the edge calls it from its one event loop.
    """

    __slots__ = ("_buckets", "_burst", "_clock", "_max_keys", "_rate")

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._rate = limit.rate
        self._burst = float(limit.burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """How many keys currently hold a bucket (at most `max_keys`)."""
        return len(self._buckets)

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens from `key`'s bucket.

        Returns 0.0 if the request is admitted (the tokens were taken), else the seconds
        until the bucket will hold `cost` tokens (always > 0): the Retry-After. A refused
        request takes nothing.

        A `cost` above the burst can never be admitted: it is refused every time, and the
        value returned is `cost / rate`, finite, and what the full cost would take to accrue
        from empty. Callers that price requests should keep costs within `burst`.

        Raises:
            ValueError: `cost` is not a positive finite number (a zero or negative cost
                would admit for free or refill the bucket).
        """
        if not (cost > 0 and math.isfinite(cost)):
            raise ValueError(f"cost must be a positive finite number, got {cost!r}")
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_keys:
                buckets.popitem(last=False)
            bucket = _Bucket(self._burst, now)
            buckets[key] = bucket
        else:
            buckets.move_to_end(key)
            # max(): a clock that steps back never drains a bucket.
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.stamp = now
        if cost > self._burst:
            return cost / self._rate
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self._rate


def retry_after_header(seconds: float) -> str:
    """A Retry-After value (RFC 9110 delay-seconds) for a wait of `seconds`: whole
    seconds, rounded up so a client that obeys it is admitted, at least 1 (a "0" invites
    an immediate retry storm) and at most a day. A NaN gives "1"."""
    if math.isnan(seconds):
        return "1"
    if seconds >= _MAX_RETRY_AFTER:
        return str(_MAX_RETRY_AFTER)
    return str(max(1, math.ceil(seconds)))


# --- CORS -----------------------------------------------------------------------------

# scheme "://" host [":" port], nothing after: an Origin header never carries a path, so a
# configured "https://shop.example/" would silently never match; it is refused instead.
_ORIGIN = re.compile(
    r"[a-z][a-z0-9+.\-]*://(?:[a-z0-9\-._~%!$&'()*+,;=]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)
# RFC 9110 token: method and header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_REQUESTED_HEADERS = 64  # Access-Control-Request-Headers entries we are willing to read


def _check_tokens(what: str, values: tuple[str, ...]) -> None:
    for value in values:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value) or value == "*":
            raise ValueError(f"CorsPolicy.{what}: {value!r} is not a name (list names, not '*')")


@dataclass(frozen=True)
class CorsPolicy:
    """Which browser origins may call the edge, and with what.

    Origins are compared exactly, after lower-casing (an origin is only scheme, host and
    port, so that is lower-casing scheme and host). There is no suffix, prefix or regex
    matching on purpose: a rule such as "ends with shop.example" also admits
    `evil-shop.example`, and "starts with https://shop.example" admits
    `https://shop.example.evil.test`; every origin a browser may call from is listed.
    Default ports are not normalised: browsers omit them, so list `https://shop.example`.

    `"*"` admits any origin and is answered with `Access-Control-Allow-Origin: *`; it is
    refused together with `allow_credentials`, since that would let every site on the web
    make authenticated calls with a user's cookies. The `null` origin (sandboxed iframes,
    `file:` pages, some redirects) is one any page can produce, so neither `"*"` nor
    anything else admits it unless `"null"` is listed itself.

    Raises:
        ValueError: at construction, for `"*"` with `allow_credentials`, an entry that is
            not an origin (a path, a trailing slash, non-ASCII: use the punycode form),
            a method or header that is not an RFC 9110 token, or a negative `max_age`.
    """

    allowed_origins: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    allowed_headers: tuple[str, ...] = (
        "authorization",
        "content-type",
        "x-request-id",
        "grpc-timeout",
    )
    exposed_headers: tuple[str, ...] = ("x-request-id", "retry-after")
    allow_credentials: bool = False
    max_age: int = 600

    # Precomputed in __post_init__: the request path only looks things up.
    _origins: frozenset[str] = field(init=False, repr=False, compare=False)
    _wildcard: bool = field(init=False, repr=False, compare=False)
    _longest_origin: int = field(init=False, repr=False, compare=False)
    _methods: frozenset[str] = field(init=False, repr=False, compare=False)
    _headers: frozenset[str] = field(init=False, repr=False, compare=False)
    _actual_tail: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _preflight_tail: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        origins: set[str] = set()
        wildcard = False
        for origin in self.allowed_origins:
            if not isinstance(origin, str):
                raise ValueError(f"CorsPolicy.allowed_origins: {origin!r} is not a string")
            if origin == "*":
                wildcard = True
                continue
            normal = origin.lower()
            if normal != "null" and not (normal.isascii() and _ORIGIN.fullmatch(normal)):
                raise ValueError(
                    f"CorsPolicy.allowed_origins: {origin!r} is not an origin "
                    "(scheme://host[:port], ASCII, no path or trailing slash)"
                )
            origins.add(normal)
        if wildcard and self.allow_credentials:
            raise ValueError(
                "CorsPolicy: allowed_origins '*' cannot be combined with allow_credentials"
            )
        _check_tokens("allowed_methods", self.allowed_methods)
        _check_tokens("allowed_headers", self.allowed_headers)
        _check_tokens("exposed_headers", self.exposed_headers)
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 0:
            raise ValueError(f"CorsPolicy.max_age must be an int >= 0, got {self.max_age!r}")

        common: list[tuple[str, str]] = [("vary", "Origin")]
        if self.allow_credentials:
            common.append(("access-control-allow-credentials", "true"))
        actual = list(common)
        if self.exposed_headers:
            actual.append(("access-control-expose-headers", ", ".join(self.exposed_headers)))
        preflight = list(common)
        if self.allowed_methods:
            preflight.append(("access-control-allow-methods", ", ".join(self.allowed_methods)))
        if self.allowed_headers:
            preflight.append(("access-control-allow-headers", ", ".join(self.allowed_headers)))
        preflight.append(("access-control-max-age", str(self.max_age)))

        set_ = object.__setattr__  # frozen: the dataclass's own escape hatch
        set_(self, "_origins", frozenset(origins))
        set_(self, "_wildcard", wildcard)
        set_(self, "_longest_origin", max((len(o) for o in origins), default=0))
        # Methods are case-sensitive (RFC 9110 9.1); header names are not.
        set_(self, "_methods", frozenset(self.allowed_methods))
        set_(self, "_headers", frozenset(h.lower() for h in self.allowed_headers))
        set_(self, "_actual_tail", tuple(actual))
        set_(self, "_preflight_tail", tuple(preflight))

    def _allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request's Origin, or None if it is
        not allowed. Only an allow-listed value (or "*") is ever returned, so no request
        text of unbounded size or content reaches a header."""
        if origin is None:
            return None
        if self._wildcard:
            if origin.lower() != "null":
                return "*"
        elif len(origin) > self._longest_origin:
            return None  # cannot match; and no lower() of a huge header
        if origin.lower() in self._origins:
            # Echo the browser's own spelling: it compares the header to its origin byte
            # for byte. It equals a listed origin up to case, so it is clean.
            return "*" if self._wildcard else origin
        return None

    def is_preflight(self, method: str, headers: Mapping[str, str]) -> bool:
        """Whether a request is a CORS preflight: OPTIONS with Origin and
        Access-Control-Request-Method (`headers` keyed by lower-case names). A bare OPTIONS
        is not one, and goes on to routing like any other method."""
        return (
            method == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        )

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, list[tuple[str, str]]]:
        """The answer to a preflight: 204 and the CORS headers if the origin, the requested
        method and every requested header are allowed; else 403 with no CORS headers.

        A refusal carries no CORS headers because the browser fails the preflight on their
        absence anyway, and listing what *is* allowed would only tell a disallowed page
        (or a prober) the policy. The 403 also never reflects the request's origin, method
        or headers. The edge answers preflights itself; they never reach a service.
        """
        allow_origin = self._allow_origin(headers.get("origin"))
        if allow_origin is None:
            return 403, []
        if headers.get("access-control-request-method", "") not in self._methods:
            return 403, []
        requested = headers.get("access-control-request-headers", "")
        if requested:
            names = requested.split(",", _MAX_REQUESTED_HEADERS)
            if len(names) > _MAX_REQUESTED_HEADERS:
                return 403, []
            for name in names:
                name = name.strip().lower()
                if name and name not in self._headers:
                    return 403, []
        return 204, [("access-control-allow-origin", allow_origin), *self._preflight_tail]

    def response_headers(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The CORS headers for an actual (non-preflight) response: the allowed origin
        (echoed, or "*" under a wildcard policy, never "*" with credentials),
        `Vary: Origin`, `Access-Control-Allow-Credentials: true` when set, and
        `Access-Control-Expose-Headers`. `[]` when the request has no Origin or one that
        is not allowed: the browser then withholds the response from the page."""
        allow_origin = self._allow_origin(headers.get("origin"))
        if allow_origin is None:
            return []
        return [("access-control-allow-origin", allow_origin), *self._actual_tail]


# --- Security headers -----------------------------------------------------------------

_API_CSP = "default-src 'none'; frame-ancestors 'none'"

DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "font-src 'self'; "
    "connect-src 'self'; "
    "worker-src 'self' blob:; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "form-action 'none'"
)
"""A Content-Security-Policy for an API docs page (Swagger UI or Redoc) served from the
edge's own origin, in place of the JSON one: its scripts, styles, fonts and the OpenAPI
document come from 'self'; the UIs set inline styles, hence 'unsafe-inline' for styles only;
their icons are data: URIs; Redoc's search runs in a blob: worker. Scripts are never inline,
so the page's bootstrap (`SwaggerUIBundle({...})`) must be a file served from 'self'."""

_BASE: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", _API_CSP),
)
_NO_STORE = (("cache-control", "no-store"),)
_HSTS = (("strict-transport-security", "max-age=31536000; includeSubDomains"),)

_SECURITY_HEADERS: dict[tuple[bool, bool], tuple[tuple[str, str], ...]] = {
    (tls, no_store): _BASE + (_NO_STORE if no_store else ()) + (_HSTS if tls else ())
    for tls in (False, True)
    for no_store in (False, True)
}


def security_headers(*, tls: bool, no_store: bool) -> tuple[tuple[str, str], ...]:
    """The headers every edge response carries, for a JSON API.

    `no_store` adds `cache-control: no-store`, for responses that carry credentials or
    tokens (auth). `tls` adds HSTS, which browsers ignore over plain HTTP and which would
    pin a dev setup on http://localhost to HTTPS if sent there. The tuples are built once
    at import; the same object comes back on every call.
    """
    return _SECURITY_HEADERS[(bool(tls), bool(no_store))]
