"""Per-method fault injection: `services.<name>.faults` in mesh.yaml (both forms, every
bad value named by its key, the JSON Schema), the draw of each call's fate (seeded),
which fault is in force (mesh.yaml's, etcd's over it), what a faulted call gets, and
the flags of `meshctl fault`."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry

from mesh.config import MethodFault, mesh_schema, parse_config
from mesh.errors import ConfigError
from mesh.problems import ERROR_DOMAIN, INJECTED_FAULT, InjectedFault
from mesh.registry import decode_fault, encode_fault, fault_key, faults_root
from mesh.server import FaultInjector
from mesh.server._faults import ArmedFault, arm, decide, resolve_method
from mesh.supervisor import FaultReport, fault_report_text, format_fault, parse_fault

GET = "shop.product.v1.ProductService/GetProduct"
LIST = "shop.product.v1.ProductService/ListProducts"
OWN = (GET, LIST, "shop.product.v1.ProductService/CreateProduct")


def faults_of(faults: object) -> dict[str, MethodFault]:
    config = parse_config({"services": {"payment": {"faults": faults}}}, Path("/m/mesh.yaml"))
    return dict(config.service("payment").faults)


def config_error(faults: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        faults_of(faults)
    return caught.value


# -- mesh.yaml ---------------------------------------------------------------------------


def test_faults_by_method_with_every_key() -> None:
    faults = faults_of(
        {
            "Charge": {
                "fail_percent": 30,
                "status": "UNAVAILABLE",
                "delay_ms": 200,
                "delay_percent": 50,
            }
        }
    )

    assert faults == {
        "Charge": MethodFault(fail_percent=30, status="UNAVAILABLE", delay_ms=200, delay_percent=50)
    }


def test_a_list_of_entries_naming_their_method_is_the_same_mapping() -> None:
    listed = faults_of(
        [
            {"method": "Charge", "fail_percent": 30},
            {"method": "shop.payment.v1.PaymentService/Refund", "delay_ms": 5},
        ]
    )

    assert listed == faults_of(
        {"Charge": {"fail_percent": 30}, "shop.payment.v1.PaymentService/Refund": {"delay_ms": 5}}
    )


def test_defaults_fail_nothing_and_delay_every_call_once_a_delay_is_given() -> None:
    assert faults_of({"Charge": None}) == {"Charge": MethodFault()}
    assert MethodFault() == MethodFault(0.0, "UNAVAILABLE", 0, 100.0)
    assert not MethodFault().injects
    assert MethodFault(delay_ms=10).injects
    assert not MethodFault(delay_ms=10, delay_percent=0).injects
    assert faults_of(None) == {}
    assert parse_config({"services": {"x": {}}}, Path("/m/mesh.yaml")).service("x").faults == {}


def test_a_status_is_read_in_any_case() -> None:
    assert faults_of({"Charge": {"status": " resource_exhausted"}})["Charge"].status == (
        "RESOURCE_EXHAUSTED"
    )


@pytest.mark.parametrize(
    ("faults", "key", "problem"),
    [
        ({"Charge": {"fail_percent": 130}}, "Charge.fail_percent", "at most 100"),
        ({"Charge": {"fail_percent": -1}}, "Charge.fail_percent", "at least 0"),
        ({"Charge": {"delay_percent": 101}}, "Charge.delay_percent", "at most 100"),
        ({"Charge": {"fail_percent": True}}, "Charge.fail_percent", "must be a number"),
        ({"Charge": {"status": "OK"}}, "Charge.status", "OK is no failure"),
        ({"Charge": {"status": "BROKEN"}}, "Charge.status", "'UNAVAILABLE'"),
        ({"Charge": {"delay_ms": -1}}, "Charge.delay_ms", "at least 0"),
        ({"Charge": {"delay_ms": 60_001}}, "Charge.delay_ms", "at most 60000"),
        ({"Charge": {"delay_ms": 1.5}}, "Charge.delay_ms", "must be an integer"),
        ({"Charge": {"abort_percent": 3}}, "Charge.abort_percent", "unknown setting"),
        ({"Char-ge": {}}, "Char-ge", "a method's name"),
        ({"/pkg.S/M": {}}, "/pkg.S/M", "a method's name"),
        ([{"fail_percent": 3}], "", "entry 0 names no method"),
        ([{"method": "A"}, {"method": "A"}], "", "entry 1: 'A' is listed twice"),
        ([{"method": "A", "fail_percent": 300}], "A.fail_percent", "at most 100"),
        ("Charge", "", "must be a mapping"),
    ],
)
def test_bad_values_are_named_by_their_key(faults: object, key: str, problem: str) -> None:
    error = config_error(faults)

    assert error.key == "services.payment.faults" + (f".{key}" if key else "")
    assert problem in error.problem


SCHEMA = jsonschema.Draft202012Validator(mesh_schema())


def _document(faults: object) -> dict[str, Any]:
    return {"services": {"payment": {"faults": faults}}}


@pytest.mark.parametrize(
    "faults",
    [
        {"Charge": {"fail_percent": 30, "status": "ABORTED", "delay_ms": 5, "delay_percent": 1}},
        [{"method": "shop.payment.v1.PaymentService/Charge", "delay_ms": 200}],
    ],
)
def test_the_schema_takes_both_forms(faults: object) -> None:
    faults_of(faults)

    assert SCHEMA.is_valid(_document(faults))


@pytest.mark.parametrize(
    "faults",
    [
        {"Charge": {"fail_percent": 300}},
        {"Ch-arge": {}},
        {"Charge": {"status": "OK"}},
        {"Charge": {"delay_ms": 60_001}},
        [{"fail_percent": 3}],
        [{"method": "Charge", "colour": "red"}],
    ],
)
def test_the_schema_refuses_what_loading_refuses(faults: object) -> None:
    config_error(faults)

    assert not SCHEMA.is_valid(_document(faults))


# -- one call's fate -----------------------------------------------------------------------


def armed(**fields: Any) -> ArmedFault:
    found = arm(GET, MethodFault(**fields))
    assert found is not None
    return found


def test_a_share_of_30_percent_fails_about_30_percent_of_many_calls() -> None:
    draw = random.Random(7).random
    fault = armed(fail_percent=30)

    verdicts = [decide(fault, draw) for _ in range(20_000)]

    share = sum(v.fail for v in verdicts) / len(verdicts)
    assert 0.28 < share < 0.32
    assert all(v.delay == 0 for v in verdicts)


def test_delays_and_failures_are_drawn_apart() -> None:
    draw = random.Random(11).random
    fault = armed(fail_percent=20, delay_ms=150, delay_percent=50)

    verdicts = [decide(fault, draw) for _ in range(20_000)]

    delayed = [v for v in verdicts if v.delay]
    assert {v.delay for v in delayed} == {0.15}
    assert 0.48 < len(delayed) / len(verdicts) < 0.52
    assert 0.18 < sum(v.fail for v in verdicts) / len(verdicts) < 0.22
    assert 0.18 < sum(v.fail for v in delayed) / len(delayed) < 0.22  # independent


def test_all_or_nothing_shares_are_exact() -> None:
    draw = random.Random(3).random

    assert all(decide(armed(fail_percent=100), draw).fail for _ in range(1000))
    assert not any(decide(armed(delay_ms=5, fail_percent=0), draw).fail for _ in range(1000))
    assert arm(GET, MethodFault(fail_percent=0, delay_ms=0)) is None


def test_the_armed_form_has_shares_seconds_and_a_code() -> None:
    fault = armed(fail_percent=30, status="ABORTED", delay_ms=250, delay_percent=40)

    assert fault == ArmedFault(GET, 0.3, grpc.StatusCode.ABORTED, 0.25, 0.4)


# -- which method a name names ----------------------------------------------------------------


def test_a_short_name_names_the_one_method_it_is_the_last_part_of() -> None:
    assert resolve_method("GetProduct", OWN) == GET
    assert resolve_method(GET, OWN) == GET


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("GetProdcut", "serves no method GetProdcut"),
        ("shop.product.v1.Other/GetProduct", "serves no method"),
        ("Check", "serves no method"),
        ("Get", "has several methods Get"),
    ],
)
def test_a_name_that_names_none_or_several_is_refused(name: str, problem: str) -> None:
    methods = (*OWN, "shop.a.v1.A/Get", "shop.b.v1.B/Get")
    with pytest.raises(ValueError, match=problem):
        resolve_method(name, methods)


# -- the faults in force -----------------------------------------------------------------------


def injector(declared: dict[str, MethodFault] | None = None, **kwargs: Any) -> FaultInjector:
    faults = FaultInjector("product", declared or {}, **kwargs)
    faults.bind(OWN)
    return faults


def test_declared_faults_are_armed_by_full_method() -> None:
    faults = injector({"GetProduct": MethodFault(fail_percent=30)})

    assert set(faults.armed) == {f"/{GET}"}
    assert faults.armed[f"/{GET}"].fail_share == 0.3


def test_a_declared_fault_of_a_method_the_service_lacks_stops_the_start() -> None:
    faults = FaultInjector("product", {"GetProdcut": MethodFault(fail_percent=30)})

    with pytest.raises(ConfigError) as caught:
        faults.bind(OWN)

    assert caught.value.key == "services.product.faults.GetProdcut"
    assert "GetProduct" in caught.value.problem  # the methods it has


def test_a_live_fault_overrides_the_declared_one_and_clearing_it_restores_it() -> None:
    faults = injector({"GetProduct": MethodFault(fail_percent=30)})
    lookup = faults.armed  # what every guard holds: changed in place, never replaced

    faults.set_live({GET: MethodFault(delay_ms=100)})
    assert faults.armed is lookup
    assert lookup[f"/{GET}"] == ArmedFault(GET, 0.0, grpc.StatusCode.UNAVAILABLE, 0.1, 1.0)

    faults.set_live({"GetProduct": MethodFault()})  # a live "no fault" beats mesh.yaml's
    assert lookup == {}

    faults.set_live({})
    assert lookup[f"/{GET}"].fail_share == 0.3


def test_a_full_name_wins_over_a_short_one_for_the_same_method() -> None:
    faults = injector()

    faults.set_live({GET: MethodFault(fail_percent=10), "GetProduct": MethodFault(fail_percent=90)})

    assert faults.armed[f"/{GET}"].fail_share == 0.1


def test_live_faults_of_methods_not_served_are_ignored() -> None:
    faults = injector()

    faults.set_live(
        {
            "grpc.health.v1.Health/Check": MethodFault(fail_percent=100),
            "Watch": MethodFault(fail_percent=100),
            "ListProducts": MethodFault(fail_percent=5),
        }
    )

    assert set(faults.armed) == {f"/{LIST}"}


def test_live_faults_before_bind_wait_for_it() -> None:
    faults = FaultInjector("product", {})
    faults.set_live({"GetProduct": MethodFault(fail_percent=5)})
    assert faults.armed == {}

    faults.bind(OWN)

    assert set(faults.armed) == {f"/{GET}"}


# -- a faulted call ------------------------------------------------------------------------


class Context:
    """What inject() reads of a grpc.aio context."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def counted(registry: CollectorRegistry, kind: str) -> float:
    labels = {"method": GET, "kind": kind}
    return registry.get_sample_value("mesh_injected_faults_total", labels) or 0.0


async def test_a_failed_call_gets_the_status_and_error_info_and_is_counted() -> None:
    registry = CollectorRegistry()
    faults = injector(
        {"GetProduct": MethodFault(fail_percent=100, status="ABORTED")}, registry=registry
    )

    with pytest.raises(InjectedFault) as caught:
        await faults.inject(faults.armed[f"/{GET}"], Context(None))  # type: ignore[arg-type]

    status = caught.value.to_status()
    assert status.code == grpc.StatusCode.ABORTED.value[0]
    assert "injected fault" in status.message
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        INJECTED_FAULT,
        ERROR_DOMAIN,
        {"method": GET},
    )
    assert counted(registry, "fail") == 1
    assert counted(registry, "delay") == 0


async def test_a_delayed_call_waits_at_least_the_delay_then_goes_on() -> None:
    registry = CollectorRegistry()
    faults = injector({"GetProduct": MethodFault(delay_ms=50)}, registry=registry)

    started = time.monotonic()
    await faults.inject(faults.armed[f"/{GET}"], Context(5.0))  # type: ignore[arg-type]

    assert time.monotonic() - started >= 0.05
    assert counted(registry, "delay") == 1


async def test_a_delay_never_outlasts_the_deadline() -> None:
    faults = injector({"GetProduct": MethodFault(delay_ms=10_000)})

    with pytest.raises(InjectedFault) as caught:
        await asyncio.wait_for(
            faults.inject(faults.armed[f"/{GET}"], Context(0.05)),  # type: ignore[arg-type]
            timeout=5,
        )

    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


# -- in etcd ------------------------------------------------------------------------------------


def test_a_fault_round_trips_through_its_etcd_value() -> None:
    fault = MethodFault(fail_percent=12.5, status="ABORTED", delay_ms=3, delay_percent=40)

    assert decode_fault(encode_fault(fault)) == fault
    assert fault_key("/p", "product", "GetProduct") == "/p/faults/product/GetProduct"
    assert fault_key("/p", "product", GET).startswith(faults_root("/p", "product"))


@pytest.mark.parametrize(
    "raw", [b"{", b"[]", b'{"fail_percent": 101}', b'{"status": "OK"}', b'{"x": 1}']
)
def test_a_malformed_etcd_value_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a fault"):
        decode_fault(raw)


# -- meshctl fault's flags and report -------------------------------------------------------


def test_flags_describe_a_whole_fault() -> None:
    assert parse_fault(fail=30) == MethodFault(fail_percent=30)
    assert parse_fault(delay=200) == MethodFault(delay_ms=200)
    assert parse_fault(fail=5, status="aborted", delay=10, delay_percent=50) == MethodFault(
        5, "ABORTED", 10, 50
    )


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        ({}, "--fail"),
        ({"fail": 101}, "--fail"),
        ({"fail": float("nan")}, "--fail"),
        ({"fail": 5, "status": "OK"}, "--status"),
        ({"fail": 5, "status": "NOPE"}, "--status"),
        ({"delay": -1}, "--delay"),
        ({"delay": 60_001}, "--delay"),
        ({"delay": 5, "delay_percent": -3}, "--delay-percent"),
    ],
)
def test_bad_flags_are_named(flags: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fault(**flags)

    assert caught.value.key == flag


def test_faults_read_as_one_line_each() -> None:
    assert format_fault(MethodFault()) == "none"
    assert format_fault(MethodFault(fail_percent=30)) == "fail 30% UNAVAILABLE"
    assert format_fault(MethodFault(30, "ABORTED", 200, 50)) == (
        "fail 30% ABORTED, delay 200 ms on 50%"
    )


def test_the_report_says_where_each_fault_in_force_comes_from() -> None:
    report = FaultReport(
        "product",
        declared={
            "GetProduct": MethodFault(fail_percent=30),
            "ListProducts": MethodFault(delay_ms=5),
        },
        live={"GetProduct": MethodFault(fail_percent=100), GET: MethodFault(delay_ms=9)},
    )

    text = fault_report_text(report)

    assert report.in_force["GetProduct"] == MethodFault(fail_percent=100)
    assert "etcd (over mesh.yaml's fail 30% UNAVAILABLE)" in text
    rows = [line.split() for line in text.splitlines()[1:]]
    assert ["ListProducts", "delay", "5", "ms", "mesh.yaml"] in rows
    assert [GET, "delay", "9", "ms", "etcd"] in rows
    assert report.to_json()["live"] == {
        "GetProduct": {
            "fail_percent": 100.0,
            "status": "UNAVAILABLE",
            "delay_ms": 0,
            "delay_percent": 100.0,
        },
        GET: {"fail_percent": 0.0, "status": "UNAVAILABLE", "delay_ms": 9, "delay_percent": 100.0},
    }
    assert fault_report_text(FaultReport("product", {}, {})) == (
        "product: no faults (mesh.yaml declares none, etcd holds none)"
    )
