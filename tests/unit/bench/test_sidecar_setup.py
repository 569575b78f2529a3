"""The sidecar part's pure set-up: the mesh.yaml edits, /proc parsing for the Envoys,
the driver's settings and flag, and what the load sends to a sidecar."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from bench.cpu import name_and_parent, switches_in_status
from bench.driver import SUBJECTS, Settings, _parse
from bench.load import Target, _metadata
from bench.sidecar import BENCH_RULE, PREFIX, sidecar_document
from tests.unit.bench.factories import SETTINGS

DOCUMENT: dict[str, Any] = {
    "mesh": {"dataplane": "direct", "host": "127.0.0.1"},
    "etcd": {"endpoint": "127.0.0.1:2379", "prefix": "/shopmesh"},
    "controlplane": {"port": 15010},
    "authz": [{"callers": ["admin"], "methods": ["*"]}],
}


def test_the_sidecar_mesh_has_sidecars_its_own_prefix_and_one_more_rule() -> None:
    document = copy.deepcopy(DOCUMENT)

    sidecar_document(document)

    assert document["mesh"] == {"dataplane": "sidecar", "host": "127.0.0.1"}
    assert document["etcd"]["prefix"] == PREFIX != DOCUMENT["etcd"]["prefix"]
    assert document["controlplane"] == {"port": 0}
    assert document["authz"] == [*DOCUMENT["authz"], BENCH_RULE]
    assert BENCH_RULE == {
        "callers": ["order"],
        "methods": ["shop.product.v1.ProductService/GetProduct"],
    }


def test_a_stat_line_gives_the_name_and_the_parent() -> None:
    assert name_and_parent("41 (envoy) S 40 41 12 0 -1 4194560 1 0") == ("envoy", 40)
    # A name may hold spaces and parentheses: it ends at the last ')'.
    assert name_and_parent("7 (a (b) c) R 1 7 7 0") == ("a (b) c", 1)


def test_context_switches_are_voluntary_and_involuntary_together() -> None:
    status = (
        "Name:\twrk:worker_0\nvoluntary_ctxt_switches:\t120\n"
        "nonvoluntary_ctxt_switches:\t30\nThreads:\t9\n"
    )

    assert switches_in_status(status) == 150
    assert switches_in_status("Name:\tx\n") == 0


def test_the_sidecar_windows_are_shorter_than_the_main_ones() -> None:
    settings = replace(SETTINGS, window=4.0, warmup=1.0)

    assert settings.sidecar_timing == ((0.5, 2.0), (0.25, 1.0), (0.25, 1.0))


def test_the_estimate_adds_the_sidecar_part_only_when_it_runs() -> None:
    settings = Settings(
        rounds=5, window=4.0, warmup=1.0, workers=2, concurrency=32, pin=True, edge=False
    )
    settings = replace(settings, shop=False)
    without = replace(settings, sidecar=False)

    assert without.estimate == pytest.approx(SUBJECTS * 5 * 5.1 + 8)
    # 5 rounds of 2 x (2.6 + 1.35 + 1.35) s, plus the set-up and the registry changes.
    assert settings.estimate - without.estimate == pytest.approx(5 * 2 * 5.3 + 6.0)


def test_the_sidecar_part_runs_unless_told_not_to() -> None:
    assert _parse([])[1].sidecar is True
    assert _parse(["--no-sidecar"])[1].sidecar is False
    assert _parse(["--quick"])[1].sidecar_timing == ((0.25, 0.75), (0.125, 0.375), (0.125, 0.375))


def test_a_target_without_metadata_sends_none_as_before() -> None:
    assert _metadata(Target("127.0.0.1:1", "/m", b"")) is None
    header = (("x-shopmesh-idempotent", "1"),)
    assert _metadata(Target("unix:/s", "/m", b"", authority="product", metadata=header)) == header
