"""Entrypoint: `python -m services.notification --config mesh.yaml`."""

from __future__ import annotations

from shop.notification.v1 import notification_pb2, notification_pb2_grpc

from mesh.server import Runtime, run_service
from mesh.tasks import cancel_and_wait, start_background
from services.common.messaging import consume
from services.notification.changes import Changes, follow_commits
from services.notification.consumer import NotificationConsumer
from services.notification.domain import TOPICS
from services.notification.servicer import NotificationServicer
from services.notification.store import CONSUMER, NotificationStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the notifications database (shared by every instance), make notifications
    from the events of TOPICS as consumer "notification", and serve NotificationService;
    watches wake on this instance's inserts and, through the file, on the others'."""
    store = NotificationStore(rt.data_dir / "notification.db")
    rt.on_close(store.close)
    changes = Changes()
    following = start_background(follow_commits(store.data_version, changes), "commit follower")
    rt.on_close(lambda: cancel_and_wait(following))  # registered after the store: runs first
    consumer = NotificationConsumer(store, changes)
    for topic in TOPICS:
        consume(rt, topic, CONSUMER, consumer.handle)
    rt.add_service(
        notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
        NotificationServicer(store, changes, caller_of=rt.caller_of),
        notification_pb2_grpc.add_NotificationServiceServicer_to_server,
    )


def main() -> int:
    return run_service("notification", setup)


if __name__ == "__main__":
    raise SystemExit(main())
