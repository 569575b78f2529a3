"""The edge's /docs page: Swagger UI 5, which renders OpenAPI 3.1, served from the
files the swagger-ui-bundle-v2 wheel installs, so nothing is fetched from the internet.

Only the files the page loads are served, each found through the wheel's own record of
what it installed (not by joining a request path to a folder), so no request can name
a file outside that list. The wheel's index.html and swagger-initializer.js, which
show the Petstore, are replaced by ours: the page reads the document's URL from an
attribute of its root element, and the initializer script is static, so the page runs
no inline script. Swagger UI's online validator badge is turned off
(`validatorUrl: null`): it would send the document to validator.swagger.io.

The wheel installs into the `swagger_ui_bundle` package, as swagger-ui-bundle (which
carries Swagger UI 4, too old for OpenAPI 3.1) does: with both installed the files of
each stay apart (vendor/swagger-ui-<version>/), and only this wheel's are used.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
from pathlib import Path, PurePosixPath

__all__ = ["DOCS_PATH", "DocsUnavailableError", "docs_asset", "swagger_ui_version"]

DOCS_PATH = "/docs"
_DISTRIBUTION = "swagger-ui-bundle-v2"
_FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "index.css",
    "favicon-16x16.png",
    "favicon-32x32.png",
    "oauth2-redirect.html",
    "oauth2-redirect.js",
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}
_HTML = _TYPES[".html"]
_INITIALIZER = "swagger-initializer.js"

_INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation</title>
<link rel="stylesheet" href="{docs}/swagger-ui.css">
<link rel="stylesheet" href="{docs}/index.css">
<link rel="icon" type="image/png" href="{docs}/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{docs}/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{url}" data-oauth2-redirect="{docs}/oauth2-redirect.html"></div>
<script src="{docs}/swagger-ui-bundle.js"></script>
<script src="{docs}/swagger-ui-standalone-preset.js"></script>
<script src="{docs}/{initializer}"></script>
</body>
</html>
"""

_INITIALIZER_JS = b"""// Swagger UI on the document named by the page's #swagger-ui element.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    validatorUrl: null,
    oauth2RedirectUrl: new URL(root.dataset.oauth2Redirect, window.location.href).href,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
});
"""


class DocsUnavailableError(RuntimeError):
    """The Swagger UI bundle is not installed (or not as expected)."""


def docs_asset(path: str, *, openapi_url: str = "/openapi.json") -> tuple[bytes, str] | None:
    """The body and content type of the /docs resource at `path` (a request path, its
    query string allowed), or None if there is no such resource.

    "/docs", "/docs/" and "/docs/index.html" are the page, showing the document at
    `openapi_url`; "/docs/<file>" is one of the page's files. Nothing else is served:
    paths are compared whole, not resolved, so "..", encoded or not, names nothing.

    Raises:
        DocsUnavailableError: the swagger-ui-bundle-v2 wheel is missing or broken.
    """
    path = path.partition("?")[0].partition("#")[0]
    if path in (DOCS_PATH, f"{DOCS_PATH}/", f"{DOCS_PATH}/index.html"):
        return _index(openapi_url), _HTML
    name = path.removeprefix(f"{DOCS_PATH}/")
    if name == path:
        return None
    if name == _INITIALIZER:
        return _INITIALIZER_JS, _TYPES[".js"]
    file = _bundle().get(name)
    if file is None:
        return None
    return _read(file), _TYPES[file.suffix]


def swagger_ui_version() -> str:
    """The version of Swagger UI served, e.g. "5.31.0"."""
    _bundle()
    return importlib.metadata.version(_DISTRIBUTION)


def _index(openapi_url: str) -> bytes:
    page = _INDEX.format(
        docs=DOCS_PATH, url=html.escape(openapi_url, quote=True), initializer=_INITIALIZER
    )
    return page.encode()


@functools.cache
def _bundle() -> dict[str, Path]:
    """The allow-list: each file the page loads, by name, where the wheel put it."""
    try:
        distribution = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise DocsUnavailableError(f"{_DISTRIBUTION} is not installed") from error
    version = distribution.version
    if not version.startswith("5."):
        raise DocsUnavailableError(f"{_DISTRIBUTION} {version}: Swagger UI 5 is needed")
    folder = PurePosixPath("swagger_ui_bundle", "vendor", f"swagger-ui-{version}")
    found: dict[str, Path] = {}
    for record in distribution.files or ():
        where = PurePosixPath(record.as_posix())
        if where.parent == folder and where.name in _FILES:
            located = Path(str(distribution.locate_file(record))).resolve()
            if located.is_file():
                found[where.name] = located
    missing = sorted(set(_FILES) - set(found))
    if missing:
        raise DocsUnavailableError(f"{_DISTRIBUTION} {version} lacks {', '.join(missing)}")
    return found


@functools.cache
def _read(file: Path) -> bytes:
    return file.read_bytes()
