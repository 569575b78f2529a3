"""Entrypoint: `python -m services.profile --config mesh.yaml`."""

from __future__ import annotations

from shop.profile.v1 import profile_pb2, profile_pb2_grpc

from mesh.server import Runtime, run_service
from services.common.messaging import follow
from services.profile.commands import ProfileCommands
from services.profile.queries import ProfileQueries
from services.profile.servicer import ProfileServicer
from services.profile.store import ProfileStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the read model (shared by every instance), keep it following topic "user"
    (its lag in /metrics), and serve ProfileService."""
    store = ProfileStore(rt.data_dir / "profile.db")
    rt.on_close(store.close)
    follow(rt, store.projection)  # registered after the store: stops before it closes
    rt.add_service(
        profile_pb2.DESCRIPTOR.services_by_name["ProfileService"],
        ProfileServicer(
            ProfileQueries(store, rt.event_bus),
            ProfileCommands(store.projection, rt.event_bus),
            caller_of=rt.caller_of,
        ),
        profile_pb2_grpc.add_ProfileServiceServicer_to_server,
    )


def main() -> int:
    return run_service("profile", setup)


if __name__ == "__main__":
    raise SystemExit(main())
