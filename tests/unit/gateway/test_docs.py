"""gateway._docs: the /docs page and Swagger UI's files, and nothing else."""

from __future__ import annotations

import pytest

from gateway._docs import _bundle, docs_asset, swagger_ui_version

JS = "text/javascript; charset=utf-8"
HTML = "text/html; charset=utf-8"


def _body(path: str, openapi_url: str = "/openapi.json") -> bytes:
    found = docs_asset(path, openapi_url=openapi_url)
    assert found is not None, path
    return found[0]


def test_the_bundle_is_swagger_ui_5() -> None:
    # Swagger UI 4 cannot render OpenAPI 3.1.
    assert swagger_ui_version().startswith("5.")
    assert f'"{swagger_ui_version()}"'.encode() in _body("/docs/swagger-ui-bundle.js")


@pytest.mark.parametrize("path", ["/docs", "/docs/", "/docs/index.html", "/docs/?x=1"])
def test_the_index_points_at_the_document(path: str) -> None:
    found = docs_asset(path)
    assert found is not None
    page, kind = found
    assert kind == HTML
    text = page.decode()
    assert 'data-openapi-url="/openapi.json"' in text
    for script in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f'<script src="/docs/{script}"></script>' in text
    assert '<script src="/docs/swagger-initializer.js"></script>' in text
    assert "<script>" not in text  # no inline script
    assert "http" not in text  # nothing from elsewhere


def test_the_index_escapes_the_document_url() -> None:
    text = _body("/docs", openapi_url='/api/openapi.json?a=1&b="<x>"').decode()
    assert 'data-openapi-url="/api/openapi.json?a=1&amp;b=&quot;&lt;x&gt;&quot;"' in text
    assert "<x>" not in text


def test_the_initializer_reads_the_url_from_the_page() -> None:
    found = docs_asset("/docs/swagger-initializer.js")
    assert found is not None
    script, kind = found
    assert kind == JS
    assert b"root.dataset.openapiUrl" in script
    assert b"validatorUrl: null" in script  # no call out to validator.swagger.io
    assert b"petstore" not in script


@pytest.mark.parametrize(
    ("name", "kind", "starts"),
    [
        ("swagger-ui-bundle.js", JS, b""),
        ("swagger-ui-standalone-preset.js", JS, b""),
        ("swagger-ui.css", "text/css; charset=utf-8", b""),
        ("index.css", "text/css; charset=utf-8", b""),
        ("favicon-32x32.png", "image/png", b"\x89PNG"),
        ("favicon-16x16.png", "image/png", b"\x89PNG"),
        ("oauth2-redirect.html", HTML, b""),
        ("oauth2-redirect.js", JS, b""),
    ],
)
def test_the_page_files_are_served(name: str, kind: str, starts: bytes) -> None:
    found = docs_asset(f"/docs/{name}")
    assert found is not None
    body, content_type = found
    assert content_type == kind
    assert len(body) > 100
    assert body.startswith(starts)
    assert docs_asset(f"/docs/{name}?v=1") == found


def test_the_bundle_files_are_one_folder_of_the_wheel() -> None:
    folders = {file.parent for file in _bundle().values()}
    assert len(folders) == 1
    (folder,) = folders
    assert folder.name == f"swagger-ui-{swagger_ui_version()}"
    assert folder.parent.name == "vendor"


@pytest.mark.parametrize(
    "path",
    [
        "/docs/../../etc/passwd",
        "/docs/../../../../../../etc/passwd",
        "/docs/%2e%2e/%2e%2e/etc/passwd",
        "/docs/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/docs/..%2f..%2fetc%2fpasswd",
        "/docs/%252e%252e%252fetc%252fpasswd",
        "/docs/..\\..\\etc\\passwd",
        "/docs//etc/passwd",
        "/docs/./swagger-ui.css",
        "/docs/swagger-ui.css/../../../etc/passwd",
        "/docs/swagger-ui.css%00.png",
        "/docs/vendor/swagger-ui-5.31.0/swagger-ui.css",
        "/docs/../__init__.py",
        "/docs/../../swagger_ui_bundle/__init__.py",
        "/docs/%2fetc%2fpasswd",
        "/docs/etc/passwd",
    ],
)
def test_traversal_is_refused(path: str) -> None:
    assert docs_asset(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/docs/index.j2",  # the wheel's own template and Petstore page are not served
        "/docs/swagger-ui.js",
        "/docs/swagger-ui-bundle.js.map",
        "/docs/nope.js",
        "/docsx",
        "/docs.html",
        "/openapi.json",
        "/",
        "",
        "docs",
        "/DOCS",
    ],
)
def test_anything_else_is_unknown(path: str) -> None:
    assert docs_asset(path) is None
