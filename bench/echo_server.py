"""The baseline: a bare grpc.aio server with one generic unary method that returns the
request bytes unchanged. No protobuf, no interceptors, nothing of ShopMesh but (for the
mTLS variant) its credentials helper.

    python -m bench.echo_server [--certs DIR --identity NAME]

Listens on 127.0.0.1 (port 0 unless --port), prints the bound port as one line on
stdout, and serves until SIGTERM or SIGINT. With --certs it serves TLS that requires a
client certificate chaining to the CA in DIR (mesh.identity.server_credentials).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import uvloop

from bench.aio import serve_until_signalled

__all__ = ["METHOD", "main"]

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


def _handler() -> grpc.GenericRpcHandler:
    # No (de)serializers: the server hands the handler the raw request bytes and sends
    # the returned bytes as they are.
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )


async def _serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(),))
    address = f"{args.host}:{args.port}"
    if args.certs is not None:
        from mesh.identity import IdentityFiles, server_credentials

        credentials = server_credentials(IdentityFiles(args.certs, args.identity))
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    await serve_until_signalled(server, port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certs", type=Path, help="serve mTLS with the mesh CA in this folder")
    parser.add_argument("--identity", default="product", help="server identity (with --certs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
