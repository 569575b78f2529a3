"""`python -m bench.product_server`: the product service's own servicer and store, served
by a bare grpc.aio server and nothing else of the mesh: no authorisation, metrics,
tracing, deadline hand-off, health or registry.

With `--certs` it serves the mesh's mTLS (row 5 of the driver): against it, ShopMesh
GetProduct shows what the mesh adds to one call of the same method; against the echo,
it shows what GetProduct itself (protobuf, the servicer, a larger reply) costs.
Without, it serves plaintext (h2c): the one backend behind every subject of the edge
rows (bench.edge), with `--seed N` products `sku-1` ... `sku-N` in its store.

Prints the port once it serves; stops on SIGTERM or SIGINT.
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
from services.common.money import Money
from services.product.domain import Product
from services.product.servicer import ProductServicer
from services.product.store import ProductStore

__all__ = ["SEED_PREFIX", "main", "seed_product"]

SEED_PREFIX = "sku-"


def seed_product(number: int) -> Product:
    """The `number`th (from 1) product that `--seed` stores: like-sized names and prices."""
    return Product(
        product_id=f"{SEED_PREFIX}{number}",
        name=f"Espresso beans, 1 kg, roast {number} (benchmark)",
        description="Seeded by bench.product_server for the edge rows of `make bench`.",
        price=Money("EUR", 23, 900_000_000),
    )


async def _serve(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-product-") as data:
        store = ProductStore(Path(data) / "product.db")
        for number in range(1, args.seed + 1):
            store.add(seed_product(number))
        server = grpc.aio.server()
        # Generated, with no .pyi: untyped.
        product_pb2_grpc.add_ProductServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ProductServicer(store), server
        )
        address = f"{args.host}:{args.port}"
        if args.certs is None:
            port = server.add_insecure_port(address)
        else:
            from mesh.identity import IdentityFiles, server_credentials

            credentials = server_credentials(IdentityFiles(args.certs, args.identity))
            port = server.add_secure_port(address, credentials)
        try:
            await serve_until_signalled(server, port)
        finally:
            store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.product_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--certs", type=Path, help="serve mTLS with the mesh CA in this folder (else plaintext)"
    )
    parser.add_argument("--identity", default="product", help="server identity (with --certs)")
    parser.add_argument("--seed", type=int, default=0, help="store products sku-1 ... sku-N")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
