"""`python -m bench.product_server`: the product service's own servicer and store, served
by a bare grpc.aio server with the mesh's mTLS credentials and nothing else of the mesh:
no authorisation, metrics, tracing, deadline hand-off, health or registry.

Against it, ShopMesh GetProduct shows what the mesh adds to one call of the same
method; against the echo, it shows what GetProduct itself (protobuf, the servicer, a
larger reply) costs. Prints the port once it serves; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
import uvloop
from shop.product.v1 import product_pb2_grpc

from bench.aio import serve_until_signalled
from mesh.identity import IdentityFiles, server_credentials
from services.product.servicer import ProductServicer
from services.product.store import ProductStore

__all__ = ["main"]


async def _serve(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-product-") as data:
        store = ProductStore(Path(data) / "product.db")
        server = grpc.aio.server()
        # Generated, with no .pyi: untyped.
        product_pb2_grpc.add_ProductServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ProductServicer(store), server
        )
        credentials = server_credentials(IdentityFiles(args.certs, args.identity))
        port = server.add_secure_port(f"{args.host}:{args.port}", credentials)
        try:
            await serve_until_signalled(server, port)
        finally:
            store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.product_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certs", type=Path, required=True, help="the mesh's certs folder")
    parser.add_argument("--identity", default="product", help="server identity")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
