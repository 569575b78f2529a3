"""Entrypoint: `python -m services.order --config mesh.yaml`."""

from __future__ import annotations

from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.server import Runtime, run_service
from mesh.tasks import cancel_and_wait, start_background
from services.common.messaging import relay_outbox
from services.order.clients import GrpcCatalog, GrpcInventory, GrpcPayments, GrpcShipping
from services.order.resumer import SagaResumer
from services.order.saga import OrderSaga
from services.order.servicer import OrderServicer
from services.order.settings import OrderSettings
from services.order.store import OrderStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the order database and serve OrderService, pricing with product and running
    each order's saga against inventory, payment and shipping through the mesh client;
    resume abandoned sagas in the background, as order's settings in mesh.yaml pace it;
    publish the orders' events (topic "order") from the store's outbox."""
    settings: OrderSettings = rt.settings.service_settings
    store = OrderStore(rt.data_dir / "order.db")
    rt.on_close(store.close)
    relay = relay_outbox(rt, store.database)
    store.on_events(relay.notify)
    timeout = settings.saga.step_timeout_seconds
    saga = OrderSaga(
        store,
        GrpcInventory(rt.client.channel("inventory"), timeout=timeout),
        GrpcPayments(rt.client.channel("payment"), timeout=timeout),
        GrpcShipping(rt.client.channel("shipping"), timeout=timeout),
        policy=settings.saga.policy(),
    )
    servicer = OrderServicer(
        store, GrpcCatalog(rt.client.channel("product")), saga, caller_of=rt.caller_of
    )
    resuming = start_background(
        SagaResumer(store, saga).run(settings.saga.resume_interval_seconds), "saga resumer"
    )
    rt.on_close(lambda: cancel_and_wait(resuming))  # before the store closes
    rt.add_service(
        order_pb2.DESCRIPTOR.services_by_name["OrderService"],
        servicer,
        order_pb2_grpc.add_OrderServiceServicer_to_server,
    )


def main() -> int:
    return run_service("order", setup, settings=OrderSettings)


if __name__ == "__main__":
    raise SystemExit(main())
