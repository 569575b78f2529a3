"""bench.driver.summarize: the `--json` file's keys, its ratio pairs, and the target."""

from __future__ import annotations

import json
import math

import pytest

from bench.driver import TARGET, target_summary
from bench.results import ratio
from bench.summary import (
    Checks,
    InstanceCheck,
    MachineJson,
    PlacementJson,
    RatioJson,
    SettingsJson,
    SubjectJson,
    Summary,
    TargetJson,
    ThreadPlacement,
    WindowJson,
)
from tests.unit.bench.factories import SUBJECT_NAMES, UNPINNED, make_summary, subject_at

# What the README and people's scripts read: renaming or dropping one breaks them.
TOP_LEVEL = [
    "benchmark",
    "machine",
    "placement",
    "settings",
    "subjects",
    "ratios",
    "target",
    "checks",
    "sidecar",  # added with the sidecar data plane: after every earlier key
    "edge",  # added with the edge rows: after every earlier key
    "shop",  # added with the shop part: after every earlier key
]
RATIO_PAIRS = {
    "shopmesh_vs_plaintext_echo": "3/1",
    "shopmesh_traced_vs_plaintext_echo": "4/1",
    "shopmesh_vs_mtls_echo": "3/2",
    "shopmesh_vs_bare_product": "3/5",
    "bare_product_vs_mtls_echo": "5/2",
    "mtls_echo_vs_plaintext_echo": "2/1",
}


def test_the_summary_has_every_key_its_types_declare_in_order() -> None:
    summary = make_summary()

    assert list(summary) == TOP_LEVEL == list(Summary.__annotations__)
    assert list(summary["machine"]) == list(MachineJson.__annotations__)
    assert list(summary["placement"]) == list(PlacementJson.__annotations__)
    assert list(summary["settings"]) == list(SettingsJson.__annotations__)
    assert list(summary["target"]) == list(TargetJson.__annotations__)
    assert list(summary["checks"]) == list(Checks.__annotations__)
    for row in summary["subjects"]:
        assert list(row) == list(SubjectJson.__annotations__)
        for window in row["windows"]:
            assert list(window) == list(WindowJson.__annotations__)
    for pair in summary["ratios"].values():
        assert list(pair) == list(RatioJson.__annotations__)
    for check in summary["checks"]["instances"]:
        assert list(check) == list(InstanceCheck.__annotations__)
    for placed in summary["checks"]["placement"].values():
        assert list(placed) == list(ThreadPlacement.__annotations__)


def test_the_ratio_pairs_and_their_rows() -> None:
    ratios = make_summary()["ratios"]

    assert {key: r["rows"] for key, r in ratios.items()} == RATIO_PAIRS
    assert list(ratios) == list(RATIO_PAIRS)


def test_the_ratios_are_computed_from_the_rounds() -> None:
    # ShopMesh 900 and 850 calls/s against the bare product's 1000 and 1000.
    target = make_summary()["ratios"]["shopmesh_vs_bare_product"]

    assert target["calls_per_s_per_round"] == pytest.approx([0.9, 0.85])
    assert target["calls_per_s_median"] == pytest.approx(0.875)
    assert (target["calls_per_s_min"], target["calls_per_s_max"]) == pytest.approx((0.85, 0.9))
    assert target["calls_per_s_pooled"] == pytest.approx(0.875)


def test_settings_record_the_load_and_the_order_of_each_round() -> None:
    settings = make_summary()["settings"]

    assert settings["in_flight"] == 64
    assert settings["rounds"] == 2
    assert settings["order_each_round"] == list(SUBJECT_NAMES)


def test_the_target_is_the_median_of_rows_3_over_5() -> None:
    target = make_summary()["target"]

    assert target["minimum"] == TARGET == 0.85
    assert target["value"] == pytest.approx(0.875)
    assert (target["min"], target["max"]) == pytest.approx((0.85, 0.9))
    assert target["met"] is True
    assert target["statistic"] == "median over 2 rounds of the per-round ratio"


@pytest.mark.parametrize(("calls", "met"), [(850, True), (849, False), (1000, True)])
def test_the_target_is_met_at_its_floor_and_above(calls: int, met: bool) -> None:
    floor = ratio(subject_at([calls], row=3), subject_at([1000], row=5))

    assert target_summary(floor, rounds=1)["met"] is met


def test_a_target_without_a_median_is_not_met() -> None:
    floor = ratio(subject_at([900, 900], row=3), subject_at([1000, 0], row=5))

    target = target_summary(floor, rounds=2)

    assert math.isnan(target["value"])
    assert target["met"] is False


def test_the_summary_survives_a_json_round_trip() -> None:
    summary = make_summary(where=UNPINNED)

    assert json.loads(json.dumps(summary))["placement"] == {
        "cores": [0, 1],
        "pinned": False,
        "server_cpus": [],
        "load_cpus": [],
        "note": "not pinned (--no-pin)",
    }
