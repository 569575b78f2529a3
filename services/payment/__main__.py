"""Entrypoint: `python -m services.payment --config mesh.yaml`."""

from __future__ import annotations

from shop.payment.v1 import payment_pb2, payment_pb2_grpc

from mesh.server import Runtime, run_service
from services.common.messaging import relay_outbox
from services.payment.servicer import PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.store import PaymentStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the payments database (shared by every instance) and serve PaymentService,
    declining and delaying charges as payment's settings in mesh.yaml say; publish the
    payments' events (topic "payment") from the store's outbox."""
    settings: PaymentSettings = rt.settings.service_settings
    store = PaymentStore(rt.data_dir / "payment.db")
    rt.on_close(store.close)
    relay = relay_outbox(rt, store.database)
    store.on_events(relay.notify)
    rt.add_service(
        payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
        PaymentServicer(store, settings, caller_of=rt.caller_of),
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
    )


def main() -> int:
    return run_service("payment", setup, settings=PaymentSettings)


if __name__ == "__main__":
    raise SystemExit(main())
