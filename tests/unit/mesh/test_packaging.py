"""xds-protos ships its own copies of opentelemetry-proto's and googleapis-common-protos'
modules; the owners' must be the ones installed (the Makefile puts them back), or the
OTLP exporter and the status details fail to import."""

from __future__ import annotations

import importlib


def test_the_otlp_exporter_imports_beside_the_xds_api() -> None:
    importlib.import_module("envoy.service.discovery.v3.ads_pb2_grpc")
    importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    common = importlib.import_module("opentelemetry.proto.common.v1.common_pb2")
    assert hasattr(common, "InstrumentationScope")


def test_googles_common_protos_are_their_owners() -> None:
    importlib.import_module("envoy.config.route.v3.route_pb2")
    status = importlib.import_module("google.rpc.status_pb2")
    details = importlib.import_module("google.rpc.error_details_pb2")
    assert {"BadRequest", "ErrorInfo"} <= set(details.DESCRIPTOR.message_types_by_name)
    assert "Status" in status.DESCRIPTOR.message_types_by_name
