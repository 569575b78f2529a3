"""The /docs page in a real browser: headless Chromium loads it and Swagger UI renders
the shop's OpenAPI 3.1 document, every file coming from this machine.

The page and the document are served by the edge's own HTTP server and site, on
127.0.0.1, under the page's content security policy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway._descriptors import load_descriptor_set
from gateway._handler import Edge
from gateway._http import HttpServer, Request, Response, StreamingResponse
from gateway._openapi import openapi_document
from gateway._site import Site, SiteOptions

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
OPENAPI_URL = "/openapi.json"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)"
)


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, list[str]]]:
    """The edge's own HTTP surface (security headers and the docs page's CSP included)
    for the shop's contracts; no call reaches a service. Yields its URL and the paths
    the browser asked for."""
    surface = load_descriptor_set(REPO / "generated" / "shop.binpb")
    edge = Edge(surface, lambda service: None)
    document = openapi_document(surface, title="ShopMesh", version="test")
    pages = Site(edge, document, SiteOptions())
    requests: list[str] = []

    async def recorded(request: Request) -> Response | StreamingResponse:
        requests.append(request.path)
        return await pages.handle(request)

    server = HttpServer(recorded)
    port = await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        await server.close()


def _rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran (virtual time lets Swagger UI finish)."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # No name resolves but 127.0.0.1: the page must need nothing from elsewhere.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    # A session of its own, so its whole process group can be killed.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_swagger_ui_renders_the_shop_operations(
    site: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, requests = site
    dom = await asyncio.to_thread(_rendered_dom, f"{base}/docs", tmp_path / "profile")

    # The page ran: it fetched Swagger UI's files and the document from us.
    assert "/docs/swagger-ui-bundle.js" in requests
    assert OPENAPI_URL in requests
    # And rendered the operations, not an error.
    assert 'data-path="/v1/orders"' in dom
    assert 'data-path="/v1/products"' in dom
    assert 'data-path="/v1/products:batchGet"' in dom
    assert "OrderService_PlaceOrder" in dom
    assert "ProductService_ListProducts" in dom
    assert "PlaceOrder prices the items" in dom
    assert "OAS 3.1" in dom
    assert "Unable to render this definition" not in dom
    assert not any(path.startswith("http") for path in requests)
