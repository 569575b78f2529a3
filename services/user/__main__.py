"""Entrypoint: `python -m services.user --config mesh.yaml`."""

from __future__ import annotations

from shop.user.v1 import user_pb2, user_pb2_grpc

from mesh.server import Runtime, run_service
from services.common.messaging import relay_outbox
from services.user.servicer import UserServicer
from services.user.settings import UserSettings
from services.user.store import UserStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the users' event store (shared by every instance), publish its events on
    topic "user" (relaying its outbox, woken after each command that appended) and
    serve UserService."""
    settings: UserSettings = rt.settings.service_settings
    store = UserStore(rt.data_dir / "user.db", snapshot_every=settings.snapshot_every)
    rt.on_close(store.close)
    outbox = relay_outbox(rt, store.database)
    rt.add_service(
        user_pb2.DESCRIPTOR.services_by_name["UserService"],
        UserServicer(store, caller_of=rt.caller_of, on_appended=outbox.notify),
        user_pb2_grpc.add_UserServiceServicer_to_server,
    )


def main() -> int:
    return run_service("user", setup, settings=UserSettings)


if __name__ == "__main__":
    raise SystemExit(main())
