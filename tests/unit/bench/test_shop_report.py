"""bench.shop_report: the shop part's progress lines, its table, its relay section and
its warnings, from hand-made figures."""

from __future__ import annotations

import json

import pytest

from bench.shop_report import (
    bursts_text,
    print_shop_report,
    relay_phase_lines,
    shop_round_line,
    shop_row_line,
    shop_warning_lines,
    shop_window_line,
    spread_text,
)
from bench.shop_results import spread
from tests.unit.bench.factories import PINNED, UNPINNED
from tests.unit.bench.shop_factories import make_shop, make_subjects


def test_a_spread_reads_as_its_percentiles_and_count() -> None:
    assert spread_text(spread([0.001, 0.002, 0.004])) == (
        "p50 2.0 / p90 4.0 / p99 4.0 / max 4.0 ms (n=3)"
    )
    assert spread_text(spread([])) == "none"


def test_bursts_read_as_their_count_size_and_spacing() -> None:
    burst = make_shop()["relay"][1]["bursts"]

    assert bursts_text(burst) == (
        "stored in 4 bursts (gaps of 2 ms or more), 1 events each at p50 (max 1); from one "
        "to the next: p50 1000.0 / p90 1000.0 / p99 1000.0 / max 1000.0 ms (n=3)"
    )
    assert bursts_text({**burst, "bursts": 0}) == "stored in no burst"


def test_a_window_line_names_every_process_with_its_share_of_a_core() -> None:
    _, place = make_subjects()

    line = shop_window_line(1, 2, place, place.result.windows[0])

    assert line.startswith("round 1/2  2 PlaceOrder")
    assert "100/s" in line
    assert "p50  160.0 ms" in line
    assert "order 40%, product 0%" in line
    assert "payment 20%" in line
    assert "nats 10%" in line
    assert "consumer 5%" in line
    assert "load 2%" in line


def test_a_round_line_gives_that_rounds_ratio() -> None:
    get, place = make_subjects(get_calls=(2000, 1000), order_calls=(100, 80))

    assert shop_round_line(2, [get.result, place.result]) == (
        "round 2 shop: calls/s PlaceOrder / GetProduct 0.080"
    )


def test_a_row_shows_the_cpu_of_each_process_then_the_sums() -> None:
    row = make_shop()["rows"][1]

    line = shop_row_line(row, (0, 1))

    assert line.split()[:4] == ["2", "PlaceOrder", "16", "95.0"]
    assert "4211" in line  # order
    assert "7368" in line  # the mesh
    assert line.rstrip().endswith("20      97")  # core 0 and core 1 busy


def test_a_phase_shows_the_whole_its_stages_each_type_and_the_consumer() -> None:
    idle = make_shop()["relay"][1]

    lines = relay_phase_lines(idle)

    assert lines[0] == "  idle (idle): 4 of 4 events"
    assert lines[1].startswith("    commit to consumer: p50 3.0")
    assert any(line.startswith("    occurred to stored") for line in lines)
    assert any(line.startswith("    OrderPlaced: p50 3.0") for line in lines)
    assert lines[-2].endswith("while events waited (ack, fetch): none")  # none waited
    assert lines[-1].startswith("    stored in 4 bursts (gaps of 2 ms or more), 1 events each")


def test_lost_events_a_server_core_with_time_to_spare_and_stray_threads_warn() -> None:
    shop = make_shop()
    shop["relay"][1]["events"] = 3
    shop["rows"][0]["core_busy_pct"]["1"] = 70.0
    shop["placement_check"] = {
        "order": {"pid": 7, "cpus": "1", "threads": 12, "threads_elsewhere": 2}
    }

    lines = shop_warning_lines(shop, PINNED)

    assert lines == [
        "WARNING: the consumer got 3 of the 4 events of 'idle'",
        "WARNING: the server core was only 70% busy during 'GetProduct': it was not the limit",
        "WARNING: 2 of the 12 threads of order (pid 7) may run off core 1",
    ]
    assert shop_warning_lines(make_shop(), PINNED) == []


def test_the_report_prints_the_rows_the_ratio_the_relay_and_the_goals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_shop_report(json.loads(json.dumps(make_shop())), UNPINNED)

    out = capsys.readouterr().out
    assert "2 load processes x 8 in flight (16: why)" in out
    assert "PlaceOrder / GetProduct, calls/s: median 0.050" in out
    assert "p50 20.0 times, p99 20.0 times GetProduct's" in out
    assert "Orders one at a time at idle (3, 0 failed): PlaceOrder p50 12.0" in out
    assert "  relay alone (alone): 2 of 2 events" in out
    assert "relay p50, commit to consumer, idle (ms) <= 20: 3.000 -> MET" in out
