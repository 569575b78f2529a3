"""Building blocks the generators share: durations, typed configs, ADS config sources,
addresses, HTTP/2 upstream options and the sidecar's TLS contexts."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from mesh.envoy._model import SidecarNode

__all__ = [
    "HTTP_PROTOCOL_OPTIONS",
    "TLS_TRANSPORT_SOCKET",
    "ads_source",
    "downstream_tls",
    "duration",
    "http2_protocol_options",
    "percent",
    "pipe_address",
    "socket_address",
    "typed",
    "upstream_tls",
]

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
"""The key of a cluster's HTTP protocol options in typed_extension_protocol_options."""
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"


def duration(seconds: float) -> Any:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def typed(message: Any) -> Any:
    """`message` packed for a typed_config field: the `@type` comes from the message.
    Packed deterministically (map entries in key order), so that the same config gives
    the same bytes in every process, and so the same xDS version."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def percent(value: float) -> Any:
    """A FractionalPercent out of 100, the denominator runtime overrides then use."""
    return percent_pb2.FractionalPercent(
        numerator=round(value), denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def ads_source() -> Any:
    """Resources that come over the bootstrap's ADS stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(host: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def pipe_address(path: str, *, mode: int = 0) -> Any:
    """A Unix socket; `mode` is the file mode a listener creates it with."""
    return address_pb2.Address(pipe=address_pb2.Pipe(path=path, mode=mode))


def http2_protocol_options() -> dict[str, Any]:
    """typed_extension_protocol_options of a cluster spoken to in HTTP/2 only (gRPC)."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return {HTTP_PROTOCOL_OPTIONS: typed(options)}


def _common_tls(node: SidecarNode, alpn: list[str]) -> Any:
    return tls_pb2.CommonTlsContext(
        tls_certificates=[
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=node.cert_chain),
                private_key=base_pb2.DataSource(filename=node.private_key),
            )
        ],
        alpn_protocols=alpn,
    )


def upstream_tls(node: SidecarNode, peer_spiffe: str) -> Any:
    """mTLS to a peer: present the instance's certificate, trust only the mesh CA, and
    accept only a certificate whose URI SAN is `peer_spiffe` (the service dialled)."""
    common = _common_tls(node, ["h2"])
    common.validation_context.CopyFrom(
        common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(filename=node.ca),
            match_typed_subject_alt_names=[
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.URI,
                    matcher=string_pb2.StringMatcher(exact=peer_spiffe),
                )
            ],
        )
    )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed(context))


def downstream_tls(node: SidecarNode) -> Any:
    """mTLS from any mesh identity (the CA decides who is one; RBAC decides what each
    may call). Python gRPC clients refuse a server that selects no ALPN protocol, so
    h2 must be offered explicitly."""
    common = _common_tls(node, ["h2", "http/1.1"])
    common.validation_context.CopyFrom(
        common_pb2.CertificateValidationContext(trusted_ca=base_pb2.DataSource(filename=node.ca))
    )
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed(context))
