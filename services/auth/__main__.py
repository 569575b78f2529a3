"""Entrypoint: `python -m services.auth --config mesh.yaml`."""

from __future__ import annotations

import asyncio

from shop.auth.v1 import auth_pb2, auth_pb2_grpc

from mesh.server import Runtime, run_service
from services.auth.domain import Passwords
from services.auth.keys import KeyRing
from services.auth.servicer import AuthServicer
from services.auth.settings import AuthSettings
from services.auth.store import AuthStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the users' and keys' database (shared by every instance), make sure a key
    signs, and serve AuthService."""
    settings: AuthSettings = rt.settings.service_settings
    store = AuthStore(rt.data_dir / "auth.db")
    rt.on_close(store.close)
    passwords = await asyncio.to_thread(
        Passwords,
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )
    keys = KeyRing(
        store, token_ttl=settings.token_ttl, rotation_interval=settings.key_rotation_interval
    )
    await keys.current()  # the JWKS has a key before the first login
    rt.add_service(
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        AuthServicer(store, passwords, keys, settings),
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
    )


def main() -> int:
    return run_service("auth", setup, settings=AuthSettings)


if __name__ == "__main__":
    raise SystemExit(main())
