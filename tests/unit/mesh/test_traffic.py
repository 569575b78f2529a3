"""The traffic commands' logic without a mesh: flag parsing, the canary's judge, reading
a sidecar's split and drift from its admin's JSON (samples taken from a real Envoy
1.40 sidecar of this mesh, in samples/), the policy table, and meshctl's exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.cli import main
from mesh.config import MeshConfig, parse_config
from mesh.errors import ConfigError, MeshError
from mesh.registry import Endpoint
from mesh.supervisor import (
    ClusterStats,
    canary_weights,
    cluster_stats,
    judge,
    known_versions,
    parse_error_rate,
    parse_interval,
    parse_steps,
    parse_weights,
    policy_rows,
    route_weights,
    runtime_overrides,
    sidecars_of,
    stable_version,
    switch_weights,
    validate_weights,
)

SAMPLES = Path(__file__).parent / "samples"
BATCH = "shop.product.v1.ProductService/BatchGetProducts"
GET = "shop.product.v1.ProductService/GetProduct"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def mesh_config(tmp_path: Path, **product: Any) -> MeshConfig:
    document = {"services": {"product": {"versions": {"v1": 2, "v2": 1}, **product}, "order": {}}}
    return parse_config(document, tmp_path / "mesh.yaml")


# -- --weights, --switch ------------------------------------------------------------------


def test_weights_parse_into_versions_and_whole_numbers() -> None:
    assert parse_weights("v1=90,v2=10") == {"v1": 90, "v2": 10}
    assert parse_weights(" v1 = 0 , v2=100 ") == {"v1": 0, "v2": 100}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("v1", "version=weight pairs"),
        ("=5", "version=weight pairs"),
        ("v1=90,", "version=weight pairs"),
        ("V1=5", "no version name"),
        ("v1=-1", "whole numbers from 0"),
        ("v1=1.5", "whole numbers from 0"),
        ("v1=ten", "whole numbers from 0"),
        ("v1=99999999999", "whole numbers from 0"),
        ("v1=\u00b2", "whole numbers from 0"),
        ("v1=1,v1=2", "given twice"),
        ("v1=0,v2=0", "above 0"),
    ],
)
def test_bad_weights_name_the_flag_and_the_problem(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_weights(text)
    assert caught.value.key == "--weights"
    assert says in caught.value.problem


def test_an_error_repeats_little_of_a_long_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_weights("v1=" + "9" * 5000)
    assert len(str(caught.value)) < 200


def test_known_versions_are_declared_ones_then_registered_ones(tmp_path: Path) -> None:
    spec = mesh_config(tmp_path).service("product")
    registered = [
        Endpoint("product", "product-v3-1", "h:1", "v3"),
        Endpoint("product", "product-1", "h:2", "v1"),
        Endpoint("order", "order-1", "h:3", "v9"),
    ]
    assert known_versions(spec, registered) == ("v1", "v2", "v3")


def test_weights_cover_every_known_version_and_refuse_unknown_ones(tmp_path: Path) -> None:
    spec = mesh_config(tmp_path).service("product")
    versions = ("v1", "v2", "v3")
    assert validate_weights(spec, versions, {"v3": 5}) == {"v1": 0, "v2": 0, "v3": 5}
    with pytest.raises(ConfigError, match="product runs no version v4 \\(it runs v1, v2, v3"):
        validate_weights(spec, versions, {"v1": 1, "v4": 1})


def test_switch_sends_every_call_to_one_version(tmp_path: Path) -> None:
    spec = mesh_config(tmp_path).service("product")
    assert switch_weights(spec, ("v1", "v2"), "v2") == {"v1": 0, "v2": 100}
    with pytest.raises(ConfigError) as caught:
        switch_weights(spec, ("v1", "v2"), "v3")
    assert caught.value.key == "--switch"


# -- --steps, --interval, --max-error-rate --------------------------------------------


def test_steps_rise_to_100() -> None:
    assert parse_steps("10,25,50,100") == (10, 25, 50, 100)
    assert parse_steps("100") == (100,)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0,100", "from 1 to 100"),
        ("10,101", "from 1 to 100"),
        ("10,,100", "from 1 to 100"),
        ("ten,100", "from 1 to 100"),
        ("\u00b2,100", "from 1 to 100"),
        ("50,25,100", "more calls than the one before"),
        ("50,50,100", "more calls than the one before"),
        ("10,50", "must be 100"),
    ],
)
def test_bad_steps_say_why(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        parse_steps(text)
    assert caught.value.key == "--steps"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("1m", 60.0), ("2", 2.0), ("1.5s", 1.5), (" 3s ", 3.0)],
)
def test_intervals_take_units_or_seconds(text: str, seconds: float) -> None:
    assert parse_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["0", "0ms", "-1s", "10h", "2m30s", "abc", "", "61m", "\u00b2s", "9" * 5000]
)
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_interval(text)
    assert caught.value.key == "--interval"


def test_the_error_rate_bound_is_a_fraction() -> None:
    assert parse_error_rate("0.01") == 0.01
    assert parse_error_rate("0") == 0.0
    for text in ("1.5", "-0.1", "1%", "nan", "x"):
        with pytest.raises(ConfigError, match="fraction"):
            parse_error_rate(text)


# -- the canary's split ---------------------------------------------------------------------


def test_the_stable_version_is_the_one_with_most_calls() -> None:
    assert stable_version({"v1": 10, "v2": 0, "v3": 90}, "v2") == "v3"
    assert stable_version({"v1": 50, "v2": 0, "v3": 50}, "v2") == "v1"  # the first on a tie
    assert stable_version({"v1": 90, "v2": 10}, "v2") == "v1"


def test_a_canary_needs_a_stable_version_with_calls() -> None:
    with pytest.raises(ConfigError, match="runs only v1"):
        stable_version({"v1": 100}, "v1")
    with pytest.raises(MeshError, match="no version but v2 gets calls"):
        stable_version({"v1": 0, "v2": 100}, "v2")


def test_a_step_gives_the_canary_its_share_and_the_stable_version_the_rest() -> None:
    assert canary_weights(("v1", "v2", "v3"), "v1", "v3", 25) == {"v1": 75, "v2": 0, "v3": 25}
    assert canary_weights(("v1", "v2"), "v1", "v2", 0) == {"v1": 100, "v2": 0}


# -- reading what the sidecars counted ----------------------------------------------------


def test_cluster_stats_read_grpc_statuses_per_method_from_envoy() -> None:
    stats = sample("envoy_stats.json")
    v2 = cluster_stats(stats, "product_v2")
    assert v2.totals == {BATCH: 43}
    assert v2.oks == {BATCH: 37}  # six ended in status 14 (a fault v2's sidecar injected)
    v1 = cluster_stats(stats, "product_v1")
    assert v1.totals == v1.oks == {BATCH: 57}


def test_errors_are_grpc_statuses_not_http_codes() -> None:
    """Every ReserveStock call got HTTP 200, most with FAILED_PRECONDITION (out of stock)."""
    stats = sample("envoy_stats.json")
    http_200 = next(
        s["value"]
        for s in stats["stats"]
        if s.get("name") == "cluster.inventory_v1.upstream_rq_200"
    )
    reserve = "shop.inventory.v1.InventoryService/ReserveStock"
    inventory = cluster_stats(stats, "inventory_v1")
    assert inventory.totals == {reserve: http_200}
    assert inventory.oks == {reserve: 25}
    verdict = judge({"order-1": stats_of({}, {})}, {"order-1": inventory}, 0.01)
    assert verdict.breach is not None
    assert verdict.breach.errors == http_200 - 25


def test_the_p99_is_the_intervals_else_the_cumulative_one() -> None:
    stats = sample("envoy_stats.json")
    assert cluster_stats(stats, "product_v2").p99_ms == 52.5  # the flush interval's
    histograms = {
        "histograms": {
            "supported_quantiles": [50, 99],
            "computed_quantiles": [
                {
                    "name": "cluster.c_v1.upstream_rq_time",
                    "values": [
                        {"interval": 1, "cumulative": 2},
                        {"interval": None, "cumulative": 7.5},
                    ],
                }
            ],
        }
    }
    assert cluster_stats({"stats": [histograms]}, "c_v1").p99_ms == 7.5
    before_the_first_flush = {"stats": [{"histograms": {"supported_quantiles": [99]}}]}
    assert cluster_stats(before_the_first_flush, "c_v1").p99_ms is None


def stats_of(totals: dict[str, int], oks: dict[str, int], p99: float | None = None) -> ClusterStats:
    return ClusterStats(totals, oks, p99)


def test_the_judge_counts_only_the_step_and_names_the_worst_method() -> None:
    before = {
        "order-1": stats_of({BATCH: 100, GET: 10}, {BATCH: 100, GET: 10}),
        "gateway-1": stats_of({GET: 5}, {GET: 5}),
    }
    after = {
        "order-1": stats_of({BATCH: 200, GET: 20}, {BATCH: 199, GET: 20}, 12.0),
        "gateway-1": stats_of({GET: 15}, {GET: 13}, 30.0),
    }
    verdict = judge(before, after, 0.05)
    rates = {m.method: (m.calls, m.errors) for m in verdict.methods}
    assert rates == {BATCH: (100, 1), GET: (20, 2)}
    assert verdict.calls == 120
    assert verdict.error_rate == pytest.approx(3 / 120)
    assert verdict.p99_ms == 30.0  # the worst sidecar's
    assert verdict.breach is not None
    assert verdict.breach.method == GET
    assert verdict.breach.rate == pytest.approx(0.1)
    assert judge(before, after, 0.1).breach is None  # at the bound is within it


def test_the_judge_from_real_snapshots() -> None:
    """Before: the sample with v2's failures taken out; after: the sample itself."""
    after = cluster_stats(sample("envoy_stats.json"), "product_v2")
    before = stats_of({BATCH: 13}, {BATCH: 13})
    verdict = judge({"order-1": before}, {"order-1": after}, 0.01)
    assert verdict.breach is not None
    assert (verdict.breach.method, verdict.breach.calls, verdict.breach.errors) == (BATCH, 30, 6)
    assert verdict.p99_ms == 52.5


def test_the_judge_needs_a_call_and_survives_restarts_and_silent_sidecars() -> None:
    quiet = judge({"a": stats_of({}, {})}, {"a": stats_of({}, {})}, 0.0)
    assert (quiet.calls, quiet.breach, quiet.p99_ms) == (0, None, None)
    # A sidecar that restarted counts from 0 again: all its counts are the step's.
    restarted = judge(
        {"a": stats_of({BATCH: 500}, {BATCH: 500})}, {"a": stats_of({BATCH: 4}, {BATCH: 2})}, 0.0
    )
    assert restarted.breach is not None
    assert (restarted.breach.calls, restarted.breach.errors) == (4, 2)
    # One that did not answer before: its counters hold older calls, left out.
    unseen = judge({}, {"a": stats_of({BATCH: 9}, {BATCH: 0})}, 0.0)
    assert unseen.calls == 0


# -- a sidecar's split and its drift ----------------------------------------------------


def test_route_weights_read_the_outbound_route_of_the_service() -> None:
    dump = sample("envoy_routes.json")
    assert route_weights(dump, "product") == {"v1": 100, "v2": 0}
    assert route_weights(dump, "inventory") == {"v1": 1}
    assert route_weights(dump, "nothing") is None
    assert route_weights({}, "product") is None


def test_a_weight_of_zero_reads_as_zero_however_envoy_renders_it() -> None:
    dump = {
        "configs": [
            {
                "route_config": {
                    "name": "outbound",
                    "virtual_hosts": [
                        {
                            "name": "product",
                            "routes": [
                                {
                                    "route": {
                                        "weighted_clusters": {
                                            "clusters": [
                                                {"name": "product_v1", "weight": 100},
                                                {"name": "product_v2"},
                                            ]
                                        }
                                    }
                                }
                            ],
                        }
                    ],
                }
            }
        ]
    }
    assert route_weights(dump, "product") == {"v1": 100, "v2": 0}


def test_runtime_overrides_of_the_weights_are_drift() -> None:
    runtime = sample("envoy_runtime.json")  # runtime_modify?weights.product.product_v2=7
    assert runtime["layers"] == ["static", "admin"]
    assert runtime_overrides(runtime, "product") == {"v2": 7}
    assert runtime_overrides(runtime, "inventory") == {}
    assert runtime_overrides(runtime, "prod") == {}  # a prefix of another name is not it


def test_an_override_that_envoy_ignores_is_no_override() -> None:
    runtime = {
        "layers": ["static", "admin"],
        "entries": {
            "weights.product.product_v1": {"final_value": "", "layer_values": ["", ""]},
            "weights.product.product_v2": {"final_value": "x", "layer_values": ["", "x"]},
            "weights.product.product_v3": {"final_value": "\u00b2", "layer_values": ["", "\u00b2"]},
        },
    }
    assert runtime_overrides(runtime, "product") == {}


def test_sidecars_are_the_instances_that_registered_an_admin() -> None:
    endpoints = [
        Endpoint("order", "order-1", "h:1", metadata={"envoy_admin": "127.0.0.1:9901"}),
        Endpoint("order", "order-2", "h:2", metadata={"dataplane": "direct"}),
    ]
    (only,) = sidecars_of(endpoints)
    assert (only.instance, only.admin) == ("order-1", "127.0.0.1:9901")


# -- the policy table -------------------------------------------------------------------------


def test_the_policy_table_names_every_policy_and_who_applies_it(tmp_path: Path) -> None:
    config = mesh_config(tmp_path, policy={"timeout": 2.5, "weights": {"v1": 90, "v2": 10}})
    rows = {row.policy: row for row in policy_rows(config, "product", {"v1": 50, "v2": 50})}
    assert list(rows) == [
        "timeouts", "retries", "retry budget", "connection limits", "outlier detection",
        "version weights", "fault injection", "rate limit",
    ]  # fmt: skip
    assert all(row.sidecar.applies for row in rows.values())
    direct = {name for name, row in rows.items() if row.direct.applies}
    assert direct == {"timeouts", "retries", "retry budget", "version weights"}
    for name in ("connection limits", "fault injection", "rate limit"):
        assert rows[name].direct.note == "no (sidecar only)"
    assert "breaker" in rows["outlier detection"].direct.note
    assert rows["timeouts"].declared["timeout"] == 2.5
    assert rows["version weights"].declared == {
        "weights": {"v1": 90, "v2": 10},
        "live": {"v1": 50, "v2": 50},
    }
    assert "live: v1=50 v2=50" in rows["version weights"].text
    assert rows["rate limit"].declared["tokens_per_second"] == 100
    json.dumps([row.to_json() for row in rows.values()])  # --json can print it


def test_a_timeout_the_policy_leaves_out_is_the_clients(tmp_path: Path) -> None:
    (row, *_) = policy_rows(mesh_config(tmp_path), "product", live_known=False)
    assert row.declared["timeout"] == 5.0
    assert "client.timeout" in row.text


# -- meshctl ------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A mesh.yaml for a mesh that was never started here."""
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump({"services": {"product": {"versions": {"v1": 1, "v2": 1}}}}))
    return path


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["traffic", "product", "--weights", "v1=x"], "--weights: v1: weights are whole numbers"),
        (["canary", "product", "v2", "--steps", "10,50"], "--steps: the last step must be 100"),
        (["canary", "product", "v2", "--interval", "soon"], "--interval: give a duration"),
        (["canary", "product", "v2", "--max-error-rate", "5"], "--max-error-rate: give a fraction"),
        (["policy", "nothing"], "no service 'nothing'"),
    ],
)
def test_bad_usage_exits_2_saying_why(
    config_file: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), *argv]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["traffic", "product"],
        ["traffic", "product", "--switch", "v2"],
        ["canary", "product", "v2"],
        ["apply"],
    ],
)
def test_live_commands_say_when_no_mesh_runs(
    config_file: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), *argv]) == 1
    assert "no mesh is running here; start one with `meshctl up`" in capsys.readouterr().err


def test_policy_works_without_a_running_mesh(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "policy", "product", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["service"] == "product"
    assert len(document["policies"]) == 8
    weights = next(p for p in document["policies"] if p["policy"] == "version weights")
    assert "the mesh is not running" in weights["text"]
    assert main(["--config", str(config_file), "policy", "product"]) == 0
    table = capsys.readouterr().out
    assert "outlier detection" in table
    assert "no (sidecar only)" in table
