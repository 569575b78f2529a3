"""Faults injected on purpose into a real product instance: mesh.yaml's fault of
GetProduct fails a share of its calls with the chosen status and ErrorInfo
INJECTED_FAULT; `meshctl fault` overrides it live (no restart), `--clear` returns to
it; a delay holds calls at least that long but never past their deadline; health and
reflection are never faulted; each injected fault is counted on /metrics.

Calls go straight to the instance on one channel (as admin), without the mesh client,
whose retries and breaker would hide the share the instance fails: to its own port
with `dataplane: direct`, to its sidecar's inbound with `dataplane: sidecar`. Each test
runs on both."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.cli import main as meshctl
from mesh.config import ADMIN_IDENTITY
from mesh.identity import IdentityFiles, channel_credentials
from mesh.problems import INJECTED_FAULT, STATUS_DETAILS_KEY, error_reason
from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import REPO, MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value

pytestmark = pytest.mark.integration

GET = "shop.product.v1.ProductService/GetProduct"
LIST = "shop.product.v1.ProductService/ListProducts"
DECLARED_SHARE = 30
APPLY_BOUND = 5.0
"""Seconds a live change may take to show in calls (it takes well under one)."""


@pytest.fixture(scope="module", params=["direct", "sidecar"])
async def mesh(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    nats: NatsServer,
    certs_dir: Path,
) -> AsyncIterator[MeshHarness]:
    """product, faults and all, on either data plane: the instance injects them itself."""
    repo = yaml.safe_load((REPO / "mesh.yaml").read_text())["services"]
    product = {
        "port": 0,
        "metrics_port": 0,
        "settings": repo["product"]["settings"],
        "faults": {"GetProduct": {"fail_percent": DECLARED_SHARE, "status": "ABORTED"}},
    }
    config = write_config(
        tmp_path_factory.mktemp("faults"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"product": 1},
        overrides={
            "events": {"broker": "nats", "endpoint": nats.endpoint},
            "services": {"product": product},
        },
        dataplane=request.param,
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def channel(mesh: MeshHarness) -> AsyncIterator[grpc.aio.Channel]:
    endpoint = mesh.instances["product-1"].endpoint
    assert endpoint is not None
    credentials = channel_credentials(IdentityFiles(mesh.config.certs_dir, ADMIN_IDENTITY))
    async with grpc.aio.secure_channel(endpoint.address, credentials) as opened:
        yield opened


@pytest.fixture
async def products(channel: grpc.aio.Channel, mesh: MeshHarness) -> AsyncIterator[Any]:
    """ProductService on the instance; every live fault is cleared after the test."""
    yield product_pb2_grpc.ProductServiceStub(channel)
    code, out = await run_meshctl(mesh, "fault", "product", "--clear")
    assert code == 0, out


async def run_meshctl(mesh: MeshHarness, *args: str) -> tuple[int, str]:
    """`meshctl --config <the test's mesh.yaml> args...` (in a thread: it runs its own
    event loop), with what it printed."""

    def run() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = meshctl(["--config", str(mesh.config.path), *args])
            except SystemExit as exit:  # argparse refused the arguments
                code = int(exit.code or 0)
        return code, out.getvalue()

    return await asyncio.to_thread(run)


Outcome = grpc.StatusCode


async def get(products: Any, timeout: float = 5.0) -> tuple[Outcome, str | None]:
    """One GetProduct: its code, and its ShopMesh ErrorInfo reason if it failed."""
    try:
        await products.GetProduct(
            product_pb2.GetProductRequest(product_id="sku-mug"), timeout=timeout
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), _reason(error)
    return grpc.StatusCode.OK, None


def _reason(error: grpc.aio.AioRpcError) -> str | None:
    for key, raw in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(raw, bytes):
            return error_reason(status_pb2.Status.FromString(raw))
    return None


async def until(products: Any, seen: Callable[[Outcome], bool]) -> float:
    """Seconds until a GetProduct ends as `seen` wants (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < APPLY_BOUND:
        code, _ = await get(products)
        if seen(code):
            return time.monotonic() - started
    raise AssertionError(f"no such call within {APPLY_BOUND}s")


async def timed_list(products: Any, timeout: float = 5.0) -> float:
    started = time.monotonic()
    await products.ListProducts(product_pb2.ListProductsRequest(), timeout=timeout)
    return time.monotonic() - started


async def test_mesh_yamls_fault_fails_a_share_with_its_status_and_error_info(
    products: Any,
) -> None:
    outcomes = [await get(products) for _ in range(300)]

    failed = [o for o in outcomes if o[0] is not grpc.StatusCode.OK]
    assert set(failed) == {(grpc.StatusCode.ABORTED, INJECTED_FAULT)}
    # 30% of 300: about 90 (a standard deviation is 8).
    assert 54 <= len(failed) <= 126
    for _ in range(20):  # another method of the service has no fault
        await products.ListProducts(product_pb2.ListProductsRequest(), timeout=5)


async def test_meshctl_fault_overrides_it_live_and_clear_returns_to_it(
    products: Any, mesh: MeshHarness
) -> None:
    code, out = await run_meshctl(
        mesh, "fault", "product", "GetProduct", "--fail", "100", "--status", "unavailable"
    )
    assert code == 0, out
    applied = await until(products, lambda c: c is grpc.StatusCode.UNAVAILABLE)
    outcomes = [await get(products) for _ in range(30)]
    assert set(outcomes) == {(grpc.StatusCode.UNAVAILABLE, INJECTED_FAULT)}

    code, out = await run_meshctl(mesh, "fault", "product", "--json")
    shown = json.loads(out)
    assert code == 0
    assert shown["declared"]["GetProduct"]["fail_percent"] == DECLARED_SHARE
    assert shown["live"]["GetProduct"] == {
        "fail_percent": 100.0,
        "status": "UNAVAILABLE",
        "delay_ms": 0,
        "delay_percent": 100.0,
    }
    code, out = await run_meshctl(mesh, "fault", "product")
    assert "etcd (over mesh.yaml's fail 30% ABORTED)" in out

    code, out = await run_meshctl(mesh, "fault", "product", "--clear", "GetProduct")
    assert (code, "cleared GetProduct" in out) == (0, True)
    cleared = await until(products, lambda c: c is not grpc.StatusCode.UNAVAILABLE)
    outcomes = [await get(products) for _ in range(100)]
    assert {c for c, _ in outcomes} <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
    assert grpc.StatusCode.ABORTED in {c for c, _ in outcomes}  # mesh.yaml's, again
    print(f"applied after {applied * 1000:.0f} ms, cleared after {cleared * 1000:.0f} ms")


async def test_a_delay_holds_calls_at_least_that_long(products: Any, mesh: MeshHarness) -> None:
    code, out = await run_meshctl(mesh, "fault", "product", "ListProducts", "--delay", "300")
    assert code == 0, out

    started = time.monotonic()
    while await timed_list(products) < 0.3:
        assert time.monotonic() - started < APPLY_BOUND, "the delay never applied"

    assert all([await timed_list(products) >= 0.3 for _ in range(5)])


async def test_a_delay_ends_at_the_calls_deadline(products: Any, mesh: MeshHarness) -> None:
    instance = mesh.instances["product-1"]

    def ended_at_deadline() -> float:
        """ListProducts calls the instance ended with DEADLINE_EXCEEDED so far."""
        return value(
            scrape_instance(instance),
            "grpc_server_handled_total",
            grpc_type="unary",
            grpc_service="shop.product.v1.ProductService",
            grpc_method="ListProducts",
            grpc_code="DeadlineExceeded",
        )

    before = await asyncio.to_thread(ended_at_deadline)
    code, out = await run_meshctl(mesh, "fault", "product", "ListProducts", "--delay", "20000")
    assert code == 0, out
    started = time.monotonic()
    while True:  # until a call is held past its deadline: the delay is in force
        assert time.monotonic() - started < APPLY_BOUND, "the delay never applied"
        try:
            await timed_list(products, timeout=0.3)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            break
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED

    # The instance gave up on that call at its deadline too, not 20 s later.
    waited = time.monotonic()
    while await asyncio.to_thread(ended_at_deadline) < before + 1:
        assert time.monotonic() - waited < APPLY_BOUND, "the instance slept past the deadline"
        await asyncio.sleep(0.05)


async def test_health_and_reflection_are_never_faulted(
    products: Any, channel: grpc.aio.Channel, mesh: MeshHarness
) -> None:
    for method in ("grpc.health.v1.Health/Check", "Check", "ServerReflectionInfo"):
        code, out = await run_meshctl(mesh, "fault", "product", method, "--fail", "100")
        assert code == 0, out
    code, out = await run_meshctl(mesh, "fault", "product", "GetProduct", "--fail", "100")
    assert code == 0, out
    await until(products, lambda c: c is grpc.StatusCode.UNAVAILABLE)  # the keys are in

    health = health_pb2_grpc.HealthStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    for _ in range(20):
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listing = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        answers = [answer async for answer in listing]
        names = {s.name for s in answers[0].list_services_response.service}
        assert "shop.product.v1.ProductService" in names


async def test_injected_faults_are_counted_by_method_and_kind(
    products: Any, mesh: MeshHarness
) -> None:
    instance = mesh.instances["product-1"]
    before = await asyncio.to_thread(scrape_instance, instance)
    code, out = await run_meshctl(
        mesh, "fault", "product", "GetProduct", "--fail", "100", "--delay", "1"
    )
    assert code == 0, out
    await until(products, lambda c: c is grpc.StatusCode.UNAVAILABLE)
    for _ in range(10):
        await get(products)

    after = await asyncio.to_thread(scrape_instance, instance)

    def grew(kind: str) -> float:
        name, labels = "mesh_injected_faults_total", {"method": GET, "kind": kind}
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("fail") >= 11
    assert grew("delay") >= 11


@pytest.mark.parametrize(
    "args",
    [
        ("fault", "product", "GetProduct", "--fail", "130"),
        ("fault", "product", "GetProduct", "--fail", "5", "--status", "OK"),
        ("fault", "product", "GetProduct", "--delay", "-5"),
        ("fault", "product", "GetProduct"),
        ("fault", "product", "Get-Product", "--fail", "5"),
        ("fault", "product", "--fail", "5"),
        ("fault", "product", "GetProduct", "--clear", "--fail", "5"),
        ("fault", "product", "GetProduct", "--clear", "ListProducts"),
        ("fault", "nosuch", "GetProduct", "--fail", "5"),
    ],
)
async def test_bad_usage_exits_2_and_writes_nothing(
    mesh: MeshHarness, args: tuple[str, ...]
) -> None:
    code, _ = await run_meshctl(mesh, *args)
    assert code == 2

    _, out = await run_meshctl(mesh, "fault", "product", "--json")
    assert json.loads(out)["live"] == {}
