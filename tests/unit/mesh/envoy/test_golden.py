"""Everything a sidecar receives, as indented JSON golden files in tests/unit/golden/envoy/.

The fixture mesh (fixtures.py) goes through each generator and the bootstrap; the
output must equal the golden file, so a review shows every change to the config.
After an intended change, rewrite the files and read the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/mesh/envoy/test_golden.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from mesh.envoy import bootstrap, runtime_defaults
from mesh.envoy._clusters import clusters
from mesh.envoy._endpoints import endpoints
from mesh.envoy._listeners import listeners
from mesh.envoy._routes import routes
from tests.unit.mesh.envoy.fixtures import mesh_view, sidecar_node

GOLDEN_DIR = Path(__file__).parents[2] / "golden" / "envoy"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def _listeners() -> Any:
    return _messages(listeners(mesh_view(), sidecar_node()))


def _routes() -> Any:
    return _messages(routes(mesh_view(), sidecar_node()))


def _clusters() -> Any:
    return _messages(clusters(mesh_view(), sidecar_node()))


def _endpoints() -> Any:
    view = mesh_view()
    names = [name for service in sorted(view.services) for name in _cluster_names(view, service)]
    return _messages(endpoints(view, names))


def _cluster_names(view: Any, service: str) -> list[str]:
    return [f"{service}_{version}" for version in view.versions_of(service)]


def _bootstrap() -> Any:
    view = mesh_view()
    node = sidecar_node()
    return bootstrap(
        node,
        xds_host="127.0.0.1",
        xds_port=15010,
        controlplane_spiffe=view.spiffe_id("controlplane"),
        admin_host="127.0.0.1",
        runtime=runtime_defaults(view.services[node.service]),
    )


RENDERED: dict[str, Callable[[], Any]] = {
    "bootstrap": _bootstrap,
    "clusters": _clusters,
    "endpoints": _endpoints,
    "listeners": _listeners,
    "routes": _routes,
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_output_matches_the_golden_file(name: str) -> None:
    rendered = json.dumps(RENDERED[name](), indent=2, sort_keys=True) + "\n"
    golden = GOLDEN_DIR / f"{name}.json"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)

    assert golden.exists(), f"no {golden}; run with UPDATE_GOLDEN=1 to create it"
    assert rendered == golden.read_text(), f"{name} differs from {golden} (UPDATE_GOLDEN=1)"
