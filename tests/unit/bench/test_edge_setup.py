"""The edge part's pure set-up: the lines and versions it reads, the candidates it
finds, the driver's flags and estimate, the adapters' request conversion, the JSON
candidates' figures and the backend's products."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

import pytest

from bench import edge
from bench.driver import EDGE_SETUP, EDGE_WINDOW_COST, SUBJECTS, Settings, _parse
from bench.edge import EDGE_SUBJECTS, available_servers, gateway_port, version_in
from bench.edge_json import json_case, per_call_us, stdlib_dumps
from bench.edge_server import _asgi, joined_headers, split_target
from bench.product_server import SEED_PREFIX, seed_product
from gateway._http import Request, Response
from services.product import domain
from tests.unit.bench.factories import make_summary


def test_the_gateways_ready_line_gives_its_port() -> None:
    line = "gateway: 17 routes on http://127.0.0.1:35907 -> 127.0.0.1:37507\n"

    assert gateway_port(line) == 35907
    assert gateway_port("INFO gateway: shop.x streams requests: not served over HTTP\n") is None
    assert gateway_port("35907\n") is None


def test_a_tools_version_is_its_first_dotted_number() -> None:
    envoy = (
        "\n/work/main/.venv/bin/envoy  version: "
        "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n"
    )

    assert version_in(envoy) == "1.40.0"
    assert version_in("h2load nghttp2/1.52.0\n") == "1.52.0"
    assert version_in("no version here 1.2") == "unknown"


def test_a_candidate_server_not_installed_is_skipped_with_its_pin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "uvicorn" else object()
    )

    found, skipped = available_servers()

    assert found == ["aiohttp"]
    assert skipped == {"uvicorn": "not installed (make bench installs uvicorn==0.54.0)"}


def test_the_edge_rows_run_unless_told_not_to() -> None:
    assert _parse([])[1].edge is True
    assert _parse(["--no-edge"])[1].edge is False
    # The sidecar rows alone are a dev option for the sidecar path: no edge rows.
    assert _parse(["--sidecar-only"])[1].edge is False
    only = _parse(["--edge-only"])[1]
    assert (only.edge, only.edge_only, only.sidecar) == (True, True, False)


def test_edge_only_and_sidecar_only_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _parse(["--edge-only", "--sidecar-only"])

    assert "exclude each other" in capsys.readouterr().err


def test_the_estimate_adds_the_edge_rows_only_when_they_run() -> None:
    settings = Settings(rounds=5, window=4.0, warmup=1.0, workers=2, concurrency=32, pin=True)
    without = replace(settings, edge=False)
    edge_part = EDGE_SETUP + EDGE_SUBJECTS * 5 * (5.0 + EDGE_WINDOW_COST)

    assert settings.estimate - without.estimate == pytest.approx(edge_part)
    assert replace(settings, edge_only=True).estimate == pytest.approx(edge_part)
    assert without.estimate > SUBJECTS * 5 * 5
    assert settings.in_flight == 64


def test_the_summary_leaves_the_edge_to_the_driver() -> None:
    assert make_summary()["edge"] is None


def test_a_target_splits_into_path_and_query() -> None:
    assert split_target("/v1/products/sku-1") == ("/v1/products/sku-1", "")
    assert split_target("/v1/products?page_size=2&x=%20#frag") == (
        "/v1/products",
        "page_size=2&x=%20",
    )
    assert split_target("/v1/a%2Fb?") == ("/v1/a%2Fb", "")


def test_headers_are_lower_cased_and_repeats_joined() -> None:
    pairs = [
        (b"Host", b"127.0.0.1:8080"),
        (b"X-Request-Id", b"r1 "),
        (b"Accept", b"a"),
        (b"accept", b"b"),
        (b"X-Name", "caf\u00e9".encode("latin-1")),
    ]

    assert joined_headers(pairs) == {
        "host": "127.0.0.1:8080",
        "x-request-id": "r1",
        "accept": "a, b",
        "x-name": "caf\u00e9",
    }


class _Site:
    """Records the request the adapter builds; answers with `answer`."""

    def __init__(self, answer: Response) -> None:
        self.answer = answer
        self.requests: list[Request] = []

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return self.answer


async def test_the_asgi_adapter_hands_the_site_the_request_and_sends_its_answer() -> None:
    site = _Site(Response(200, [("content-type", "application/json")], b'{"ok":true}'))
    app = _asgi(site)  # type: ignore[arg-type]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "raw_path": b"/v1/products",
        "query_string": b"validate=1",
        "headers": [(b"host", b"edge"), (b"content-type", b"application/json")],
        "client": ("127.0.0.5", 40000),
        "http_version": "1.1",
    }
    body = iter(
        [
            {"type": "http.request", "body": b'{"product":', "more_body": True},
            {"type": "http.request", "body": b"{}}", "more_body": False},
        ]
    )
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(body)

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    await app(scope, receive, send)

    (request,) = site.requests
    assert request == Request(
        "POST",
        "/v1/products",
        "validate=1",
        {"host": "edge", "content-type": "application/json"},
        b'{"product":{}}',
        "127.0.0.5",
        "1.1",
    )
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
        },
        {"type": "http.response.body", "body": b'{"ok":true}'},
    ]


def test_the_stdlib_encodes_as_orjson_does() -> None:
    import orjson

    tree = {"productId": "sku-1", "name": "Caf\u00e9 cr\u00e8me", "units": "23", "n": [1, 2]}

    assert stdlib_dumps(tree) == orjson.dumps(tree)
    assert json.loads(stdlib_dumps(tree)) == tree


def test_a_json_case_gives_the_speedups() -> None:
    case = json_case("shop.product.v1.GetProductResponse", "encode", 251, (10, 15, 9, 0.5, 5), True)

    assert case["speedup"] == pytest.approx(1.5)
    assert case["speedup_alone"] == pytest.approx(10.0)
    assert (case["json_format_us"], case["orjson_alone_us"], case["stdlib_alone_us"]) == (9, 0.5, 5)


def test_timing_gives_a_figure_for_every_variant() -> None:
    timings = per_call_us([lambda: None, lambda: sum(range(10))], budget=0.02, repeats=2)

    assert len(timings) == 2
    assert all(0 < t < 1e6 for t in timings)


def test_the_seeded_products_are_valid_catalogue_entries() -> None:
    product = seed_product(1)

    assert product.product_id == f"{SEED_PREFIX}1" == edge.PRODUCT_ID
    assert domain.require_product_id(product.product_id) == product.product_id
    assert seed_product(2).product_id == "sku-2"


def test_make_bench_installs_the_candidates_missing_at_their_pins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = {"aiohttp": "3.9.0", "uvicorn": "0.54.0"}
    monkeypatch.setattr(edge, "_version", lambda name: installed.get(name, "not installed"))

    assert edge.missing_pins() == ["aiohttp==3.14.5"]
