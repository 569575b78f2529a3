"""The edge's per-request protections: the token-bucket limiter on a fake clock, CORS
decisions from an allow-list, and the security header sets."""

from __future__ import annotations

import math

import pytest

from gateway._protect import (
    DOCS_CSP,
    CorsPolicy,
    RateLimit,
    RateLimiter,
    retry_after_header,
    security_headers,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(rate: float, burst: int, **kwargs: int) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(RateLimit(rate=rate, burst=burst), clock=clock, **kwargs), clock


# --- Rate limiting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "expected_wait"),
    [
        (1.0, 1, 1.0),
        (2.0, 5, 0.5),
        (0.5, 3, 2.0),
        (10.0, 100, 0.1),
    ],
)
def test_burst_is_admitted_then_refused_with_the_time_to_one_token(
    rate: float, burst: int, expected_wait: float
) -> None:
    rl, _ = limiter(rate, burst)
    assert [rl.acquire("a") for _ in range(burst)] == [0.0] * burst
    wait = rl.acquire("a")
    assert wait == pytest.approx(expected_wait)
    # A refusal takes nothing: asking again at the same instant gives the same wait.
    assert rl.acquire("a") == pytest.approx(expected_wait)


def test_refill_over_time() -> None:
    rl, clock = limiter(rate=2.0, burst=4)
    for _ in range(4):
        assert rl.acquire("a") == 0.0
    assert rl.acquire("a") == pytest.approx(0.5)

    clock.advance(0.25)  # half a token
    assert rl.acquire("a") == pytest.approx(0.25)
    clock.advance(0.25)  # one token
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") > 0

    clock.advance(1.0)  # two tokens
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") > 0


def test_refill_is_capped_at_burst() -> None:
    rl, clock = limiter(rate=10.0, burst=3)
    for _ in range(3):
        rl.acquire("a")
    clock.advance(3600)  # an hour idle is still only a full bucket
    assert [rl.acquire("a") for _ in range(3)] == [0.0] * 3
    assert rl.acquire("a") == pytest.approx(0.1)


def test_clock_stepping_back_does_not_drain_or_refill() -> None:
    rl, clock = limiter(rate=1.0, burst=2)
    assert rl.acquire("a") == 0.0
    clock.advance(-50)
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") == pytest.approx(1.0)


def test_keys_are_independent() -> None:
    rl, _ = limiter(rate=1.0, burst=2)
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") > 0
    assert rl.acquire("b") == 0.0
    assert rl.acquire("b") == 0.0
    assert rl.acquire("b") > 0


@pytest.mark.parametrize(
    ("cost", "admitted_first", "wait_after"),
    [
        (2.0, [0.0, 0.0], 2.0),  # burst 4, rate 1: two costs of 2, then 2 s for the next
        (4.0, [0.0], 4.0),  # exactly the burst: admitted once from full
        (0.5, [0.0] * 8, 0.5),
    ],
)
def test_cost_is_taken_from_the_bucket(
    cost: float, admitted_first: list[float], wait_after: float
) -> None:
    rl, _ = limiter(rate=1.0, burst=4)
    assert [rl.acquire("a", cost) for _ in admitted_first] == admitted_first
    assert rl.acquire("a", cost) == pytest.approx(wait_after)


def test_partial_bucket_refuses_a_cost_it_cannot_cover_and_keeps_its_tokens() -> None:
    rl, _ = limiter(rate=1.0, burst=4)
    assert rl.acquire("a", 3) == 0.0
    assert rl.acquire("a", 2) == pytest.approx(1.0)  # has 1, needs 2
    assert rl.acquire("a", 1) == 0.0  # the refused request took nothing


def test_cost_above_burst_is_always_refused_with_a_finite_wait() -> None:
    rl, clock = limiter(rate=2.0, burst=3)
    for _ in range(3):
        wait = rl.acquire("a", 5)
        assert wait == pytest.approx(2.5)  # cost / rate
        assert math.isfinite(wait)
        clock.advance(wait)
    # It took nothing: the bucket is still full for ordinary requests.
    assert [rl.acquire("a") for _ in range(3)] == [0.0] * 3


@pytest.mark.parametrize("cost", [0.0, -1.0, math.nan, math.inf])
def test_cost_must_be_positive_and_finite(cost: float) -> None:
    rl, _ = limiter(rate=1.0, burst=1)
    with pytest.raises(ValueError, match="cost"):
        rl.acquire("a", cost)


def test_lru_bound_holds_over_many_keys() -> None:
    rl, _ = limiter(rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        assert rl.acquire(f"client-{i}") == 0.0
        assert len(rl) <= 100
    assert len(rl) == 100
    # The 100 most recent keys are still drained; the oldest were evicted.
    assert rl.acquire("client-999") > 0
    assert rl.acquire("client-900") > 0


def test_lru_evicts_least_recently_used_not_least_recently_created() -> None:
    rl, _ = limiter(rate=1.0, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert rl.acquire(key) == 0.0
    assert rl.acquire("a") > 0  # touches a: b is now the oldest
    assert rl.acquire("d") == 0.0  # evicts b
    assert rl.acquire("a") > 0  # a kept its drained bucket
    assert rl.acquire("c") > 0
    # b was evicted while drained, so it comes back with a fresh bucket (documented).
    assert rl.acquire("b") == 0.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0.0, 1), (-1.0, 1), (math.inf, 1), (math.nan, 1), (1.0, 0), (1.0, -3)],
)
def test_rate_limit_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="RateLimit"):
        RateLimit(rate=rate, burst=burst)


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(RateLimit(rate=1.0, burst=1), max_keys=0)


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (0.0, "1"),
        (0.001, "1"),
        (1.0, "1"),
        (1.01, "2"),
        (2.5, "3"),
        (59.9, "60"),
        (-4.0, "1"),
        (math.nan, "1"),
        (1e12, "86400"),
        (math.inf, "86400"),
    ],
)
def test_retry_after_header(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


# --- CORS -----------------------------------------------------------------------------

SHOP = "https://shop.example"
LOCAL = "http://localhost:3000"


def policy(**kwargs: object) -> CorsPolicy:
    kwargs.setdefault("allowed_origins", (SHOP, LOCAL))
    return CorsPolicy(**kwargs)  # type: ignore[arg-type]


def as_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), f"duplicate headers: {names}"
    return dict(headers)


@pytest.mark.parametrize(
    ("origin", "echoed"),
    [
        (SHOP, SHOP),
        (LOCAL, LOCAL),
        ("https://SHOP.Example", "https://SHOP.Example"),  # host case-insensitive; echoed as sent
        ("HTTPS://shop.example", "HTTPS://shop.example"),
    ],
)
def test_allowed_origin_gets_cors_headers(origin: str, echoed: str) -> None:
    got = as_dict(policy().response_headers({"origin": origin}))
    assert got == {
        "access-control-allow-origin": echoed,
        "vary": "Origin",
        "access-control-expose-headers": "x-request-id, retry-after",
    }


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil-shop.example",  # a suffix match would admit it
        "https://shop.example.evil.test",  # a prefix match would admit it
        "https://evil.example",
        "http://shop.example",  # other scheme
        "https://shop.example:8443",  # other port
        "https://shop.example/",
        "null",
        "",
        "https://shop.example" + "x" * 10_000,
    ],
)
def test_disallowed_origin_gets_no_headers(origin: str) -> None:
    assert policy().response_headers({"origin": origin}) == []


def test_no_origin_gets_no_headers() -> None:
    assert policy().response_headers({}) == []
    assert policy().response_headers({"host": "shop.example"}) == []


def test_configured_origins_are_lower_cased() -> None:
    p = policy(allowed_origins=("https://Shop.EXAMPLE",))
    assert as_dict(p.response_headers({"origin": SHOP}))["access-control-allow-origin"] == SHOP


def test_credentials_add_the_header_and_echo_the_origin() -> None:
    got = as_dict(policy(allow_credentials=True).response_headers({"origin": SHOP}))
    assert got["access-control-allow-origin"] == SHOP
    assert got["access-control-allow-credentials"] == "true"
    assert got["vary"] == "Origin"
    assert "access-control-allow-credentials" not in as_dict(
        policy().response_headers({"origin": SHOP})
    )


def test_no_exposed_headers_means_no_expose_header() -> None:
    got = as_dict(policy(exposed_headers=()).response_headers({"origin": SHOP}))
    assert "access-control-expose-headers" not in got


@pytest.mark.parametrize(
    ("allowed", "origin", "allow_origin"),
    [
        (("null",), "null", "null"),
        (("null",), "NULL", "NULL"),
        (("*",), "https://anything.example", "*"),
        (("*",), "null", None),  # the wildcard does not cover null
        (("*", "null"), "null", "*"),
        ((SHOP,), "null", None),
    ],
)
def test_null_origin_only_when_listed(
    allowed: tuple[str, ...], origin: str, allow_origin: str | None
) -> None:
    got = as_dict(policy(allowed_origins=allowed).response_headers({"origin": origin}))
    assert got.get("access-control-allow-origin") == allow_origin
    if allow_origin is not None:
        assert got["vary"] == "Origin"


def test_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        CorsPolicy(allowed_origins=("*",), allow_credentials=True)
    with pytest.raises(ValueError, match="credentials"):
        CorsPolicy(allowed_origins=(SHOP, "*"), allow_credentials=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_origins": ("https://shop.example/",)},
        {"allowed_origins": ("https://shop.example/api",)},
        {"allowed_origins": ("shop.example",)},
        {"allowed_origins": ("*.shop.example",)},
        {"allowed_origins": ("https://shop.example\r\nx-evil: 1",)},
        {"allowed_origins": ("https://bücher.example",)},
        {"allowed_origins": "https://shop.example"},  # a str, not a tuple
        {"allowed_methods": ("GET, POST",)},
        {"allowed_methods": ("*",)},
        {"allowed_headers": ("x-a\r\nx-b",)},
        {"exposed_headers": ("",)},
        {"max_age": -1},
    ],
)
def test_policy_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="CorsPolicy"):
        CorsPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("OPTIONS", {"origin": SHOP, "access-control-request-method": "POST"}, True),
        ("OPTIONS", {"origin": "https://evil.example", "access-control-request-method": "X"}, True),
        ("OPTIONS", {"origin": SHOP}, False),
        ("OPTIONS", {"access-control-request-method": "POST"}, False),
        ("OPTIONS", {}, False),
        ("POST", {"origin": SHOP, "access-control-request-method": "POST"}, False),
        ("GET", {"origin": SHOP}, False),
    ],
)
def test_is_preflight(method: str, headers: dict[str, str], expected: bool) -> None:
    assert policy().is_preflight(method, headers) is expected


def test_allowed_preflight() -> None:
    status, headers = policy(allow_credentials=True, max_age=120).preflight(
        {
            "origin": SHOP,
            "access-control-request-method": "PATCH",
            "access-control-request-headers": "authorization, Content-Type,x-request-id",
        }
    )
    assert status == 204
    assert as_dict(headers) == {
        "access-control-allow-origin": SHOP,
        "vary": "Origin",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE",
        "access-control-allow-headers": "authorization, content-type, x-request-id, grpc-timeout",
        "access-control-max-age": "120",
    }


def test_preflight_without_requested_headers_is_allowed() -> None:
    status, headers = policy().preflight({"origin": LOCAL, "access-control-request-method": "GET"})
    assert status == 204
    got = as_dict(headers)
    assert got["access-control-allow-origin"] == LOCAL
    assert "access-control-allow-credentials" not in got


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil-shop.example", "access-control-request-method": "GET"},
        {"origin": "null", "access-control-request-method": "GET"},
        {"access-control-request-method": "GET"},
        {"origin": SHOP, "access-control-request-method": "TRACE"},
        {"origin": SHOP, "access-control-request-method": "get"},  # methods are case-sensitive
        {"origin": SHOP, "access-control-request-method": ""},
        {"origin": SHOP},
        {
            "origin": SHOP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-admin",
        },
        {
            "origin": SHOP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "cookie",
        },
        {
            "origin": SHOP,
            "access-control-request-method": "POST",
            "access-control-request-headers": ",".join(["content-type"] * 65),
        },
    ],
)
def test_refused_preflight_is_403_with_no_cors_headers(headers: dict[str, str]) -> None:
    assert policy().preflight(headers) == (403, [])


def test_preflight_tolerates_empty_entries_in_requested_headers() -> None:
    status, _ = policy().preflight(
        {
            "origin": SHOP,
            "access-control-request-method": "POST",
            "access-control-request-headers": " content-type, ,authorization,",
        }
    )
    assert status == 204


def test_wildcard_preflight_answers_star() -> None:
    status, headers = policy(allowed_origins=("*",)).preflight(
        {"origin": "https://any.example", "access-control-request-method": "DELETE"}
    )
    assert status == 204
    assert as_dict(headers)["access-control-allow-origin"] == "*"


# --- Security headers -----------------------------------------------------------------

ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
NO_STORE = {"cache-control": "no-store"}
HSTS = {"strict-transport-security": "max-age=31536000; includeSubDomains"}


@pytest.mark.parametrize(
    ("tls", "no_store", "expected"),
    [
        (False, False, ALWAYS),
        (False, True, ALWAYS | NO_STORE),
        (True, False, ALWAYS | HSTS),
        (True, True, ALWAYS | NO_STORE | HSTS),
    ],
)
def test_security_headers(tls: bool, no_store: bool, expected: dict[str, str]) -> None:
    got = security_headers(tls=tls, no_store=no_store)
    assert isinstance(got, tuple)
    assert as_dict(list(got)) == expected
    assert security_headers(tls=tls, no_store=no_store) is got  # cached, not rebuilt


def test_docs_csp_allows_only_same_origin_scripts() -> None:
    directives = {
        d.split()[0]: d.split()[1:] for d in (part.strip() for part in DOCS_CSP.split(";")) if d
    }
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert "'unsafe-inline'" in directives["style-src"]
    assert set(directives["img-src"]) == {"'self'", "data:"}
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-eval'" not in DOCS_CSP
