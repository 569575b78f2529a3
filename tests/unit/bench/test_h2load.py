"""bench.h2load: the command line it builds, and what it reads of h2load's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.h2load import (
    MAIN_OVER,
    MAIN_STARTED,
    H2load,
    grpc_frame,
    h2load_command,
    parse_log,
    parse_summary,
    seconds_arg,
)

# What h2load 1.52 printed for one window (Debian's nghttp2-client), trimmed of its
# progress lines.
OUTPUT = """starting benchmark...
spawning thread #0: 64 total client(s). Timing-based test with 1s of warm-up time and 4s of main duration for measurements.
Warm-up started for thread #0.
progress: 100% of clients started
Application protocol: http/1.1
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 5.01s, 1433.50 req/s, 704.15KB/s
requests: 5734 total, 5734 started, 5734 done, 5730 succeeded, 4 failed, 1 errored, 2 timeout
status codes: 5730 2xx, 0 3xx, 3 4xx, 0 5xx
traffic: 2.75MB (2884202) total, 1.34MB (1406710) headers (space savings 0.00%), 1.64MB (1722362) data
                     min         max         mean         sd        +/- sd
time for request:    17.17ms    113.14ms     44.75ms     10.90ms    71.96%
time for connect:        0us         0us         0us         0us     0.00%
time to 1st byte:        0us         0us         0us         0us     0.00%
req/s           :      21.74       23.24       22.39        0.31    60.94%
"""


def test_the_summary_is_read_from_the_closing_lines() -> None:
    summary = parse_summary(OUTPUT)

    assert (summary.total, summary.done, summary.succeeded, summary.failed) == (
        5734,
        5734,
        5730,
        4,
    )
    assert (summary.errored, summary.timeout) == (1, 2)
    assert (summary.status_2xx, summary.status_4xx, summary.status_5xx) == (5730, 3, 0)
    assert summary.requests_per_s == 1433.5


def test_output_without_a_summary_is_refused() -> None:
    with pytest.raises(ValueError, match="no summary"):
        parse_summary("starting benchmark...\nconnect: Connection refused\n")


def test_the_phase_lines_are_the_ones_h2load_prints() -> None:
    lines = OUTPUT.splitlines()

    assert sum(line.startswith(MAIN_STARTED) for line in lines) == 1
    assert sum(line.startswith(MAIN_OVER) for line in lines) == 1


def test_the_log_gives_each_2xx_latency_and_counts_the_other_statuses() -> None:
    log = (
        "1796177829712168\t200\t52038\n"
        "1796177829712158\t200\t1500\n"
        "1796177829706989\t404\t57385\n"
        "1796177829706990\t-1\t10\n"
        "1796177829706991\t503\t7\n"
        "1796177829706995\t2"  # cut short as h2load stopped: skipped
    )

    figures = parse_log(log)

    assert list(figures.latencies) == [0.052038, 0.0015]
    assert figures.not_2xx == 3
    assert figures.statuses == {404: 1, -1: 1, 503: 1}
    assert list(parse_log("").latencies) == []


def test_durations_are_whole_milliseconds() -> None:
    assert seconds_arg(1.5) == "1500ms"
    assert seconds_arg(4) == "4000ms"
    assert seconds_arg(0.0001) == "1ms"


def test_a_grpc_body_is_length_prefixed() -> None:
    assert grpc_frame(b"\n\x05sku-1") == b"\x00\x00\x00\x00\x07\n\x05sku-1"
    assert grpc_frame(b"") == b"\x00\x00\x00\x00\x00"


def test_the_http_command_line() -> None:
    argv = h2load_command(
        "/usr/bin/h2load",
        "http://127.0.0.1:8080/v1/products/sku-1",
        connections=64,
        streams=1,
        warmup=1.0,
        duration=4.0,
        log_file=Path("/tmp/requests.log"),
        h1=True,
    )

    assert argv == [
        "/usr/bin/h2load",
        "--threads=1",
        "--clients=64",
        "--max-concurrent-streams=1",
        "--duration=4000ms",
        "--warm-up-time=1000ms",
        "--log-file=/tmp/requests.log",
        "--h1",
        "http://127.0.0.1:8080/v1/products/sku-1",
    ]


def test_the_grpc_command_line_posts_the_body_with_its_headers() -> None:
    argv = h2load_command(
        "h2load",
        "http://127.0.0.1:50051/shop.product.v1.ProductService/GetProduct",
        connections=1,
        streams=64,
        warmup=0.5,
        duration=1.5,
        log_file=Path("r.log"),
        h1=False,
        body_file=Path("get.grpc"),
        headers=(("content-type", "application/grpc"), ("te", "trailers")),
    )

    assert "--h1" not in argv
    assert argv[-4:] == [
        "--data=get.grpc",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        "http://127.0.0.1:50051/shop.product.v1.ProductService/GetProduct",
    ]
    assert "--clients=1" in argv
    assert "--max-concurrent-streams=64" in argv


def test_http1_has_one_request_in_flight_per_connection_and_a_warm_up_is_needed() -> None:
    def command(streams: int, warmup: float) -> list[str]:
        return h2load_command(
            "h2load",
            "http://x/",
            connections=4,
            streams=streams,
            warmup=warmup,
            duration=1.0,
            log_file=Path("r.log"),
            h1=True,
        )

    with pytest.raises(ValueError, match="one request in flight"):
        command(streams=2, warmup=1.0)
    with pytest.raises(ValueError, match="warm-up"):
        command(streams=1, warmup=0.0)


def test_in_flight_is_connections_times_streams() -> None:
    assert H2load("http://x/", connections=64, streams=1, h1=True).in_flight == 64
    assert H2load("http://x/", connections=1, streams=64, h1=False).in_flight == 64


def test_a_window_counts_2xx_answers_as_calls_and_every_other_outcome_as_an_error() -> None:
    from bench.cpu import CpuSnapshot
    from bench.h2load import _Phases, _window

    def snapshot(at: float, seconds: float) -> CpuSnapshot:
        """Server (pid 1), h2load (2), the backend (3) and an idle server (4)."""
        return CpuSnapshot(
            at=at,
            machine=10 * seconds,
            cores={0: 2 * seconds, 1: 8 * seconds},
            processes={1: 5 * seconds, 2: seconds, 3: 3 * seconds, 4: 0.0},
            main_threads={1: (4 * seconds, seconds)},
        )

    log = parse_log("1\t200\t1000\n2\t200\t3000\n3\t0\t10\n4\t-1\t10\n")
    phases = _Phases(OUTPUT, snapshot(100.0, 1.0), snapshot(104.0, 1.1), {"backend": 40})

    window = _window(4.0, parse_summary(OUTPUT), log, phases, 1, 2, [4], {"backend": 3})

    assert (window.duration, window.elapsed, window.calls) == (4.0, 4.0, 2)
    assert list(window.latencies) == [0.001, 0.003]
    # The two other log lines, and the summary's 1 errored and 2 timed out.
    assert window.errors == 5
    assert window.error_samples == [
        "no answer (stream reset or connection closed): 1",
        "an answer h2load read no status in: 1",
        "h2load: 1 errored, 2 timed out",
    ]
    assert window.server_cpu == pytest.approx(0.5)
    assert window.client_cpu == pytest.approx([0.1])
    assert window.tracked_cpu == pytest.approx({"backend": 0.3})
    assert window.tracked_switches == {"backend": 40}
    assert (window.server_loop_ran, window.server_loop_waited) == pytest.approx((0.4, 0.1))
    assert window.core_cpu == pytest.approx({0: 0.2, 1: 0.8})


def test_a_window_without_a_call_is_an_error() -> None:
    from bench.cpu import CpuSnapshot
    from bench.h2load import _Phases, _window

    quiet = CpuSnapshot(at=0.0, machine=0.0, cores={}, processes={}, main_threads={})
    phases = _Phases(OUTPUT, quiet, quiet)

    window = _window(1.0, parse_summary(OUTPUT), parse_log(""), phases, 1, 2, [], {})

    assert window.calls == 0
    assert window.errors == 1 + 1 + 2  # none completed, 1 errored, 2 timed out
    assert window.error_samples[-1].startswith("no call completed")
