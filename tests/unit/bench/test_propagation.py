"""bench.propagation's pure parts: reading /clusters, an admin's HTTP/1.1 answers, and
the registry timings' median, max and misses."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.propagation import (
    AdminError,
    ChangeTiming,
    fake_endpoint,
    read_response,
    shows_host,
)
from tests.unit.bench.sidecar_factories import SIDECARS, make_propagation

CLUSTERS = """\
inventory_v1::observability_name::inventory_v1
inventory_v1::127.0.0.1:20001::cx_active::0
inventory_v1::127.0.0.1:20001::hostname::inventory-bench-1
product_v1::127.0.0.1:20002::cx_active::2
"""


def test_a_host_is_shown_in_its_own_cluster_only() -> None:
    assert shows_host(CLUSTERS, "inventory_v1", "127.0.0.1:20001")
    assert not shows_host(CLUSTERS, "inventory_v1", "127.0.0.1:20002")  # product's
    assert not shows_host(CLUSTERS, "inventory_v1", "127.0.0.1:2000")  # a prefix only
    assert not shows_host(CLUSTERS, "ventory_v1", "127.0.0.1:20001")  # mid-line


def test_the_first_line_counts_too() -> None:
    assert shows_host("inventory_v1::10.0.0.1:1::cx_active::0\n", "inventory_v1", "10.0.0.1:1")


def test_fake_endpoints_are_distinct_per_index() -> None:
    one, two = fake_endpoint("inventory", "v1", 1), fake_endpoint("inventory", "v1", 2)

    assert (one.instance_id, one.address, one.version) == (
        "inventory-bench-1",
        "127.0.0.1:20001",
        "v1",
    )
    assert one.address != two.address


def response(raw: bytes) -> str:
    async def read() -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_response(reader)

    return asyncio.run(read())


def test_a_response_with_a_content_length() -> None:
    assert response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA") == "hello"


def test_a_chunked_response() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )

    assert response(raw) == "abcde"


def test_a_response_other_than_200_raises() -> None:
    with pytest.raises(AdminError, match="admin answered 503"):
        response(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\n\r\nbusy")


def test_a_response_that_is_not_http_raises() -> None:
    with pytest.raises(AdminError, match=r"not an HTTP/1\.1 status line"):
        response(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_change_is_everywhere_when_the_last_sidecar_shows_it() -> None:
    timing = ChangeTiming("register", (0.002, 0.009, 0.004))

    assert timing.everywhere == 0.009
    assert timing.first == 0.002


def test_a_change_one_sidecar_never_showed_is_nowhere() -> None:
    timing = ChangeTiming("deregister", (0.002, None))

    assert timing.everywhere is None
    assert timing.first == 0.002


def test_median_max_and_first_sidecar_over_the_changes() -> None:
    figures = make_propagation([20.0, 30.0, 40.0])

    assert figures["sidecars"] == list(SIDECARS)
    assert figures["actions"] == ["register", "deregister", "register"]
    assert (figures["median_ms"], figures["max_ms"]) == pytest.approx((30.0, 40.0))
    assert figures["first_sidecar_median_ms"] == pytest.approx(15.0)
    assert figures["per_sidecar_ms"][0] == pytest.approx([10.0, 20.0])
    assert figures["missed"] == 0
    assert figures["met"] is True


def test_a_missed_change_is_infinitely_late() -> None:
    figures = make_propagation([20.0, None, 40.0])

    assert figures["missed"] == 1
    assert figures["max_ms"] == math.inf
    assert figures["median_ms"] == pytest.approx(40.0)
    assert math.isnan(figures["per_sidecar_ms"][1][0])
    assert figures["met"] is False


@pytest.mark.parametrize(
    ("everywhere", "met"),
    [([50.0, 50.0, 200.0], True), ([50.1, 50.1, 60.0], False), ([10.0, 10.0, 200.1], False)],
)
def test_the_goals_are_a_median_and_a_max(everywhere: list[float], met: bool) -> None:
    assert make_propagation(everywhere)["met"] is met


def test_no_changes_meet_nothing() -> None:
    figures = make_propagation([])

    assert math.isnan(figures["median_ms"])
    assert figures["met"] is False
