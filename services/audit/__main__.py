"""Entrypoint: `python -m services.audit --config mesh.yaml`."""

from __future__ import annotations

from shop.audit.v1 import audit_pb2, audit_pb2_grpc

from mesh.server import Runtime, run_service
from services.audit.consumer import AuditRecorder
from services.audit.domain import TOPICS
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore
from services.common.messaging import consume

__all__ = ["CONSUMER", "main", "setup"]

CONSUMER = "audit"
"""The service's consumer name on the bus."""


async def setup(rt: Runtime) -> None:
    """Open the audit log (shared by every instance), append every event of TOPICS to
    it as consumer "audit", and serve AuditService."""
    store = AuditStore(rt.data_dir / "audit.db")
    rt.on_close(store.close)
    recorder = AuditRecorder(store)
    for topic in TOPICS:
        consume(rt, topic, CONSUMER, recorder.handler(topic))
    rt.add_service(
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        AuditServicer(store),
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
    )


def main() -> int:
    return run_service("audit", setup)


if __name__ == "__main__":
    raise SystemExit(main())
