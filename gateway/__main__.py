"""Standalone: `python -m gateway --descriptor-set FILE --upstream HOST:PORT --listen
HOST:PORT` serves every HTTP-bound method of every service in the set in front of one
gRPC server, as Envoy's grpc_json_transcoder would (--upstream-plaintext, or --ca,
--cert and --key for mutual TLS)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from gateway._descriptors import DescriptorSetError, load_descriptor_set
from gateway._handler import Edge, EdgeOptions
from gateway._http import HttpLimits, HttpServer
from gateway._openapi import openapi_document
from gateway._protect import CorsPolicy, RateLimit, RateLimiter
from gateway._site import Site, SiteOptions

log = logging.getLogger("gateway")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _rate(text: str) -> RateLimit:
    rate, _, burst = text.partition(":")
    try:
        limit = RateLimit(rate=float(rate), burst=int(burst) if burst else max(1, int(float(rate))))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RATE[:BURST]") from None
    if limit.rate <= 0 or limit.burst < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: rate and burst must be positive")
    return limit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="HTTP/JSON in front of a gRPC server, from the google.api.http "
        "annotations of a descriptor set (protoc --include_imports --descriptor_set_out).",
    )
    parser.add_argument("--descriptor-set", type=Path, required=True, metavar="FILE")
    parser.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="where to serve HTTP (default 127.0.0.1:8080; port 0: any free port)",
    )
    tls = parser.add_argument_group("upstream transport (one of)")
    tls.add_argument("--upstream-plaintext", action="store_true", help="plaintext gRPC (h2c)")
    tls.add_argument("--ca", type=Path, help="CA bundle the upstream's certificate must chain to")
    tls.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    tls.add_argument("--key", type=Path, help="client certificate's private key")
    served = parser.add_argument_group("serving HTTPS (both, or neither for plain HTTP)")
    served.add_argument("--tls-cert", type=Path, help="certificate chain to serve HTTPS with")
    served.add_argument("--tls-key", type=Path, help="its private key")
    parser.add_argument("--proto-names", action="store_true", help="answer with proto field names")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of a call without Grpc-Timeout (s)"
    )
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN")
    parser.add_argument(
        "--rate-limit", type=_rate, metavar="RATE[:BURST]", help="per client address"
    )
    return parser


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    host, port = args.upstream
    target = f"{host}:{port}"
    if args.upstream_plaintext:
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None,
    )
    return grpc.aio.secure_channel(target, credentials)


def _serving_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _check_transport(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.upstream_plaintext and (args.ca or args.cert or args.key):
        parser.error("--upstream-plaintext takes no --ca, --cert or --key")
    if not args.upstream_plaintext and args.ca is None:
        parser.error(
            "say how to reach the upstream: --upstream-plaintext, or --ca (with --cert and --key for mutual TLS)"
        )
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    for path in (args.ca, args.cert, args.key, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            parser.error(f"no such file: {path}")


async def _serve(args: argparse.Namespace) -> int:
    surface = load_descriptor_set(args.descriptor_set)
    channel = _channel(args)
    edge = Edge(
        surface,
        lambda service: channel,
        options=EdgeOptions(default_timeout=args.timeout, use_proto_names=args.proto_names),
    )
    host, port = args.listen
    openapi = openapi_document(
        surface, title=f"{args.descriptor_set.name}", version="", use_proto_names=args.proto_names
    )
    site = Site(
        edge,
        openapi,
        SiteOptions(
            cors=CorsPolicy(allowed_origins=tuple(args.cors_origin)) if args.cors_origin else None,
            per_address=RateLimiter(args.rate_limit) if args.rate_limit else None,
            tls=args.tls_cert is not None,
        ),
    )
    server = HttpServer(
        site.handle,
        limits=HttpLimits(max_body_bytes=args.max_body_bytes),
        error_responder=site.error_response,
        tls=_serving_tls(args),
    )
    await server.start(host, port)
    routes = sum(1 for _ in surface.bound)
    print(
        f"gateway: {routes} routes on {server.url} -> {args.upstream[0]}:{args.upstream[1]}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    await channel.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_transport(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import uvloop

    try:
        return uvloop.run(_serve(args))
    except DescriptorSetError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a binding the router or the transcoder cannot serve
        print(f"gateway: {args.descriptor_set}: {error}", file=sys.stderr)
        return 2
    except ssl.SSLError as error:
        print(f"gateway: cannot serve HTTPS with {args.tls_cert}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"gateway: cannot listen on {args.listen[0]}:{args.listen[1]}: {error.strerror}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
