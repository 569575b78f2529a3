"""One-shot gRPC health checks, made as the admin identity (meshctl's own)."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import ADMIN_IDENTITY, MeshConfig
from mesh.identity import IdentityFiles, channel_credentials

__all__ = ["check_health"]


async def check_health(
    config: MeshConfig, address: str, *, service: str = "", timeout: float = 1.0
) -> str:
    """ "SERVING", "NOT_SERVING", ... as the server says; "UNREACHABLE" if it cannot be
    reached in `timeout`; otherwise the gRPC code name of the failure."""
    credentials = channel_credentials(IdentityFiles(config.certs_dir, ADMIN_IDENTITY))
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # typeshed's stub lacks the methods
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "UNREACHABLE"
            return error.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
