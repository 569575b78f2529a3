"""bench.edge_envoy: the transcoding Envoy's bootstrap, checked by Envoy itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.edge import DESCRIPTOR_SET, SERVICE
from bench.edge_envoy import CLUSTER, LISTENER, listener_port, transcoder_bootstrap
from mesh.process import find_binary

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def _validate(document: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "bootstrap.json"
    path.write_text(json.dumps(document))
    return subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "--config-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _bootstrap(services: list[str]) -> dict[str, Any]:
    return transcoder_bootstrap(
        DESCRIPTOR_SET, services, upstream=("127.0.0.1", 50051), listen=("127.0.0.1", 0)
    )


def _filters(document: dict[str, Any]) -> list[dict[str, Any]]:
    (listener,) = document["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    filters: list[dict[str, Any]] = manager["typed_config"]["http_filters"]
    return filters


def test_envoy_accepts_the_bootstrap(tmp_path: Path) -> None:
    done = _validate(_bootstrap([SERVICE]), tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout + done.stderr


def test_envoy_refuses_a_service_the_descriptor_set_lacks(tmp_path: Path) -> None:
    # Validation loads the descriptor set: the transcoder's config is really checked.
    done = _validate(_bootstrap(["shop.nothing.v1.NothingService"]), tmp_path)

    assert done.returncode != 0
    assert "shop.nothing.v1.NothingService" in done.stdout + done.stderr


def test_the_transcoder_comes_before_the_router_and_answers_like_the_edge() -> None:
    transcoder, router = _filters(_bootstrap([SERVICE]))

    assert transcoder["name"] == TRANSCODER
    config = transcoder["typed_config"]
    assert config["proto_descriptor"] == str(DESCRIPTOR_SET)
    assert config["services"] == [SERVICE]
    assert config["convert_grpc_status"] is True
    assert router["name"] == "envoy.filters.http.router"
    assert router["typed_config"]["suppress_envoy_headers"] is True


def test_the_backend_is_spoken_to_in_http2() -> None:
    (cluster,) = _bootstrap([SERVICE])["static_resources"]["clusters"]

    assert cluster["name"] == CLUSTER
    (options,) = cluster["typed_extension_protocol_options"].values()
    assert "http2_protocol_options" in options["explicit_http_config"]
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 50051,
    }


def test_the_listener_port_is_read_from_admin() -> None:
    listeners = json.dumps(
        {
            "listener_statuses": [
                {"name": "other", "local_address": {"socket_address": {"port_value": 1}}},
                {
                    "name": LISTENER,
                    "local_address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": 40123}
                    },
                },
            ]
        }
    )

    assert listener_port(listeners) == 40123
    assert listener_port(json.dumps({"listener_statuses": []})) is None
    assert listener_port("not json") is None
