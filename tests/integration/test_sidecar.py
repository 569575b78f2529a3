"""The sidecar data plane end to end: real Envoys fed by the real control plane, real
etcd, real service processes. Calls pass both sidecars, the callee sees the caller's
identity, the inbound sidecar enforces the authz table, and an authz change applies to
an already open connection."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.config import AuthzRule, load_config
from mesh.envoy import CLUSTER_TYPE, IDEMPOTENT_HEADER
from mesh.problems import DEPENDENCY_FAILED, error_reason
from mesh.registry import authz_key, encode_authz, xds_status_root
from mesh.supervisor import EtcdServer, NatsServer, mesh_status
from tests.harness.envoy import admin_get, admin_of, admin_post, counter, envoy_pid, hosts
from tests.harness.mesh import MeshHarness, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def sidecars(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    root = tmp_path_factory.mktemp("sc")
    config = write_config(
        root,
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={"product": 1, "inventory": 2, "order": 1, "payment": 1, "shipping": 1},
        dataplane="sidecar",
    )
    # Outlier sweeps every 0.2 s and ejections of 1 s, rather than Envoy's 10 s and
    # 30 s: an ejection shows, and ends, within a test's patience.
    document = yaml.safe_load(config.path.read_text())
    document["services"]["inventory"]["policy"] = {
        "outlier": {"interval": 0.2, "base_ejection_time": 1.0}
    }
    config.path.write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(config.path)
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        stock = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))
        await stock.AdjustStock(
            inventory_pb2.AdjustStockRequest(product_id="sku-mug", delta=1_000_000, reason="load")
        )
        yield mesh
    finally:
        await mesh.aclose()


async def _order(mesh: MeshHarness, customer: str) -> order_pb2.PlaceOrderResponse:
    stub = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
    return await stub.PlaceOrder(
        order_pb2.PlaceOrderRequest(
            customer_id=customer,
            request_id=f"req-{customer}-{time.monotonic_ns()}",
            items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
        ),
        timeout=10,
    )


async def test_a_call_passes_both_sidecars(sidecars: MeshHarness) -> None:
    order_admin = admin_of(sidecars, "order-1")
    inventory_admins = [admin_of(sidecars, i) for i in ("inventory-1", "inventory-2")]
    out_name = "cluster.inventory_v1.upstream_rq_completed"
    in_name = "http.inbound.downstream_rq_completed"
    before_out = counter(order_admin, out_name)
    before_in = sum(counter(admin, in_name) for admin in inventory_admins)
    await _order(sidecars, "cust-sidecar")
    assert counter(order_admin, out_name) == before_out + 1  # order's sidecar sent it
    # One of inventory's sidecars received it (its health checks count there too).
    assert sum(counter(admin, in_name) for admin in inventory_admins) > before_in


async def test_the_registered_address_is_the_sidecars_and_speaks_mtls(
    sidecars: MeshHarness,
) -> None:
    endpoint = sidecars.instances["inventory-1"].endpoint
    assert endpoint is not None
    assert endpoint.metadata["dataplane"] == "sidecar"
    listeners = admin_get(admin_of(sidecars, "inventory-1"), "/listeners?format=json")
    assert endpoint.address.rsplit(":", 1)[1] in listeners
    # A plaintext caller gets nowhere.
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-mug"), timeout=3)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_the_app_listens_only_on_a_private_socket(sidecars: MeshHarness) -> None:
    run = sidecars.config.state_dir / "run"
    assert run.stat().st_mode & 0o777 == 0o700
    for suffix in ("app", "out"):
        assert (run / f"inventory-1.{suffix}").stat().st_mode & 0o777 == 0o600


async def test_the_inbound_sidecar_denies_a_caller_the_table_does_not_allow(
    sidecars: MeshHarness,
) -> None:
    """product may not call inventory: its calls stop at inventory's sidecar."""
    stub = inventory_pb2_grpc.InventoryServiceStub(sidecars.client("product").channel("inventory"))
    app_calls, denied = "cluster.local_app.upstream_rq_total", "http.inbound.rbac.denied"
    admins = [admin_of(sidecars, i) for i in ("inventory-1", "inventory-2")]
    before = [(counter(admin, app_calls), counter(admin, denied)) for admin in admins]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-mug"), timeout=3)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    after = [(counter(admin, app_calls), counter(admin, denied)) for admin in admins]
    assert [calls for calls, _ in after] == [calls for calls, _ in before]  # no app saw it
    assert sum(d for _, d in after) == sum(d for _, d in before) + 1


async def test_an_authz_change_denies_the_next_call_on_an_open_connection(
    sidecars: MeshHarness,
) -> None:
    prefix = sidecars.config.etcd.prefix
    stub = inventory_pb2_grpc.InventoryServiceStub(sidecars.client("admin").channel("inventory"))
    request = inventory_pb2.GetStockRequest(product_id="sku-mug")
    await stub.GetStock(request, timeout=3)  # the connection is open now
    narrowed = [r for r in sidecars.config.authz if r.callers != ("admin",)]
    try:
        await sidecars.etcd.put(authz_key(prefix), encode_authz(narrowed))
        until = time.monotonic() + 1.0
        code = grpc.StatusCode.OK
        while time.monotonic() < until:
            try:
                await stub.GetStock(request, timeout=3)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                break
            await asyncio.sleep(0.02)
        assert code is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await sidecars.etcd.put(authz_key(prefix), encode_authz(sidecars.config.authz))
    await _until_ok(lambda: stub.GetStock(request, timeout=3))


async def _until_ok(call: object, timeout: float = 3.0) -> None:
    until = time.monotonic() + timeout
    while True:
        try:
            await call()  # type: ignore[operator]
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.05)


async def _until(condition: object, what: str, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < until, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


def _sidecar_admins(mesh: MeshHarness) -> list[str]:
    return [admin_of(mesh, i) for i in mesh.instances if mesh.instances[i].endpoint is not None]


async def test_every_sidecars_clusters_follow_instances_that_come_and_go(
    sidecars: MeshHarness,
) -> None:
    admins = _sidecar_admins(sidecars)
    extra = await sidecars.start_one("inventory", "inventory-3")
    assert extra.endpoint is not None
    address = extra.endpoint.address
    await _until(
        lambda: all(address in hosts(a, "inventory_v1") for a in admins), "every sidecar has it"
    )
    os.kill(extra.pid, signal.SIGKILL)  # its lease expires; no goodbye
    await extra.wait()
    del sidecars.instances["inventory-3"]
    await _until(
        lambda: all(address not in hosts(a, "inventory_v1") for a in admins),
        "every sidecar dropped it",
        timeout=sidecars.config.etcd.lease_ttl + 5,
    )


async def test_a_sidecar_killed_under_load_fails_no_idempotent_call(sidecars: MeshHarness) -> None:
    """kill -9 of inventory-1's Envoy while order reserves stock through it: order's
    sidecar retries on inventory-2, and inventory-1 gets its Envoy back."""
    admin = admin_of(sidecars, "inventory-1")
    ok, failures, stop = 0, [], asyncio.Event()

    async def loop(worker: int) -> None:
        nonlocal ok
        sequence = 0
        while not stop.is_set():
            sequence += 1
            try:
                await _order(sidecars, f"cust-load-{worker}-{sequence}")
                ok += 1
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    workers = [asyncio.create_task(loop(n)) for n in range(3)]
    try:
        await _until(lambda: ok >= 10, "orders flow")
        os.kill(envoy_pid("inventory-1"), signal.SIGKILL)
        started = ok
        await _until(lambda: ok >= started + 30, "orders go on")
        await _until(lambda: _live(admin), "inventory-1's sidecar is back")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []


async def test_traffic_goes_on_without_the_control_plane_which_resyncs_on_restart(
    sidecars: MeshHarness,
) -> None:
    controlplane = sidecars.controlplane
    assert controlplane is not None
    await controlplane.kill()
    for index in range(5):
        await _order(sidecars, f"cust-no-cp-{index}")  # the last config serves
    await controlplane.spawn()
    await controlplane.wait_healthy()
    extra = await sidecars.start_one("inventory", "inventory-4")  # needs the control plane
    assert extra.endpoint is not None
    address = extra.endpoint.address
    admins = _sidecar_admins(sidecars)
    try:
        await _until(
            lambda: all(address in hosts(a, "inventory_v1") for a in admins),
            "every sidecar, resynced, has the new instance",
        )
    finally:
        await extra.stop()
        del sidecars.instances["inventory-4"]


async def test_an_instance_that_fails_every_call_is_ejected_and_callers_see_no_failure(
    sidecars: MeshHarness,
) -> None:
    """inventory-2's own sidecar aborts every call with UNAVAILABLE (a fault switched
    on through its admin); order's sidecar retries those on inventory-1, ejects
    inventory-2 after 5 in a row, and no order fails. (Last in the module: the
    ejection lasts a while.)"""
    broken = admin_of(sidecars, "inventory-2")
    endpoint = sidecars.instances["inventory-2"].endpoint
    assert endpoint is not None
    order_admin = admin_of(sidecars, "order-1")
    await _until(  # an earlier test's ejection is over
        lambda: not any("failed" in flags for flags in hosts(order_admin, "inventory_v1").values()),
        "no host is ejected",
    )
    admin_post(broken, "/runtime_modify?fault.abort_percent=100")
    try:
        for index in range(20):
            await _order(sidecars, f"cust-outlier-{index}")
        await _until(
            lambda: "failed_outlier_check" in hosts(order_admin, "inventory_v1")[endpoint.address],
            "order's sidecar ejects inventory-2",
        )
        for index in range(10):
            await _order(sidecars, f"cust-after-{index}")  # every one succeeds
    finally:
        admin_post(broken, "/runtime_modify?fault.abort_percent=")


def _live(admin: str) -> bool:
    try:
        return admin_get(admin, "/ready").strip() == "LIVE"
    except OSError:
        return False


async def test_meshctl_status_shows_what_a_sidecar_refused(sidecars: MeshHarness) -> None:
    """The control plane keeps each NACK (Envoy's words) in etcd; status shows it."""
    key = xds_status_root(sidecars.config.etcd.prefix) + "order-1"
    detail = "Invalid duration: Expected positive duration\nseconds: -1"
    await sidecars.etcd.put(key, json.dumps({"nacks": {CLUSTER_TYPE: detail}}).encode())
    try:
        rows = {row.id: row for row in await mesh_status(sidecars.config, sidecars.etcd, None)}
    finally:
        await sidecars.etcd.delete(key)
    assert rows["order-1"].xds_nacks == {CLUSTER_TYPE: detail}
    assert rows["order-1"].to_json()["xds_nacks"] == {CLUSTER_TYPE: detail}
    assert rows["inventory-1"].xds_nacks == {}
    assert rows["order-1"].envoy_admin == admin_of(sidecars, "order-1")


async def test_the_app_authorises_the_caller_its_sidecar_forwards(sidecars: MeshHarness) -> None:
    """Behind its sidecar the app decides on the caller named in x-forwarded-client-cert,
    which only the sidecar can send it (the socket is this user's alone): order may
    reserve stock, product may not, and a call without the header is nobody's."""
    socket = sidecars.config.state_dir / "run" / "inventory-1.app"
    request = inventory_pb2.ReserveStockRequest(
        order_id=f"ord-xfcc-{time.monotonic_ns()}",
        items=[inventory_pb2.ReservationItem(product_id="sku-mug", quantity=1)],
    )

    def as_caller(name: str) -> tuple[tuple[str, str], ...]:
        uri = f"spiffe://{sidecars.config.trust_domain}/ns/{sidecars.config.namespace}/sa/{name}"
        return (("x-forwarded-client-cert", f"By={uri};Hash=00;URI={uri}"),)

    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        await stub.ReserveStock(request, metadata=as_caller("order"), timeout=3)
        denied = await _denial(stub, request, as_caller("product"))
        anonymous = await _denial(stub, request, ())
    assert denied.code() is anonymous.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "sa/product may not call" in str(denied.details())


async def _denial(
    stub: inventory_pb2_grpc.InventoryServiceStub,
    request: inventory_pb2.ReserveStockRequest,
    metadata: tuple[tuple[str, str], ...],
) -> grpc.aio.AioRpcError:
    try:
        await stub.ReserveStock(request, metadata=metadata, timeout=3)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call was allowed")


async def test_a_sidecar_never_retries_a_failure_a_dependency_answered(
    sidecars: MeshHarness,
) -> None:
    """Retries at one level only, as with the proxyless client: when inventory fails
    every call, order answers UNAVAILABLE with DEPENDENCY_FAILED once its own sidecar
    has retried, and a caller's sidecar, even on its retrying route, sends that on as
    it is rather than try order again."""
    prefix = sidecars.config.etcd.prefix
    order_admin = admin_of(sidecars, "order-1")
    socket = sidecars.config.state_dir / "run" / "order-1.out"  # order's sidecar, as a caller
    inventories = [admin_of(sidecars, i) for i in ("inventory-1", "inventory-2")]
    order_may_call_itself = AuthzRule(callers=("order",), methods=("shop.order.v1.OrderService/*",))
    await sidecars.etcd.put(
        authz_key(prefix), encode_authz((*sidecars.config.authz, order_may_call_itself))
    )
    for admin in inventories:
        admin_post(admin, "/runtime_modify?fault.abort_percent=100")
    try:
        await asyncio.sleep(0.5)  # the table reaches every sidecar
        placed = "http.inbound.downstream_rq_total"
        before = counter(order_admin, placed)
        async with grpc.aio.insecure_channel(
            f"unix:{socket}", options=(("grpc.default_authority", "order"),)
        ) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PlaceOrder(
                    order_pb2.PlaceOrderRequest(
                        customer_id="cust-dependency",
                        request_id=f"req-dep-{time.monotonic_ns()}",
                        items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
                    ),
                    metadata=((IDEMPOTENT_HEADER, "1"),),  # the retrying route
                    timeout=10,
                )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value.details()
        status = rpc_status.from_call(caught.value)
        assert status is not None, caught.value.details()
        assert error_reason(status) == DEPENDENCY_FAILED
        assert counter(order_admin, placed) == before + 1  # order was asked once
    finally:
        for admin in inventories:
            admin_post(admin, "/runtime_modify?fault.abort_percent=")
        await sidecars.etcd.put(authz_key(prefix), encode_authz(sidecars.config.authz))
