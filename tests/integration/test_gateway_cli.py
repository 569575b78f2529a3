"""`python -m gateway` standalone, as a process: in front of a plaintext gRPC server, and
in front of a mesh instance over mutual TLS with an identity's certificate."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mesh.identity import IdentityFiles, ensure_certificates
from mesh.supervisor import EtcdServer
from tests.harness.echo import EchoUpstream, compile_protos, echo_server
from tests.harness.http import fetch
from tests.harness.mesh import REPO, MeshHarness

SHOP_SET = REPO / "generated" / "shop.binpb"


@contextlib.asynccontextmanager
async def gateway(*flags: str) -> AsyncIterator[str]:
    """The gateway process with `flags` on a free port; yields its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        if " on http" not in line:  # it failed to start: its reason is on stderr
            process.kill()
            assert process.stderr is not None
            raise AssertionError(line + (await process.stderr.read()).decode())
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0


async def run_refused(flags: Sequence[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.fixture(scope="module")
async def echo(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Path, EchoUpstream]]:
    descriptor_set = compile_protos(tmp_path_factory.mktemp("protos"))
    async with echo_server(descriptor_set) as upstream:
        yield descriptor_set, upstream


async def test_in_front_of_a_plaintext_server(echo: tuple[Path, EchoUpstream]) -> None:
    descriptor_set, upstream = echo
    flags = ("--descriptor-set", str(descriptor_set), "--upstream", upstream.address)
    async with gateway(*flags, "--upstream-plaintext") as url:
        answer = await fetch(f"{url}/v1/shelves/1/books/2")
        assert answer.status == 200
        assert answer.json()["request"] == {"name": "shelves/1/books/2"}
        document = await fetch(f"{url}/openapi.json")
        assert "/v1/search" in document.json()["paths"]


async def test_in_front_of_a_mesh_instance_over_mutual_tls(
    shop: MeshHarness, etcd: EtcdServer, certs_dir: Path
) -> None:
    product = await shop.instances["product-1"].wait_ready(shop.etcd)
    admin = IdentityFiles(certs_dir, "admin")
    flags = (
        "--descriptor-set", str(SHOP_SET), "--upstream", product.address,
        "--ca", str(admin.ca), "--cert", str(admin.cert), "--key", str(admin.key),
    )  # fmt: skip
    async with gateway(*flags) as url:
        answer = await fetch(f"{url}/v1/products/sku-mug")
        assert answer.status == 200, answer.body
        assert answer.json()["product"]["productId"] == "sku-mug"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--upstream", "127.0.0.1:1", "--upstream-plaintext"], ["--descriptor-set"]),
        (
            ["--descriptor-set", str(SHOP_SET), "--upstream", "127.0.0.1:1"],
            ["--upstream-plaintext", "--ca"],
        ),
        (
            ["--descriptor-set", str(SHOP_SET), "--upstream", "nowhere", "--upstream-plaintext"],
            ["HOST:PORT"],
        ),
        (
            [
                "--descriptor-set",
                "/no/such.binpb",
                "--upstream",
                "127.0.0.1:1",
                "--upstream-plaintext",
            ],
            ["/no/such.binpb"],
        ),
        (
            ["--descriptor-set", str(SHOP_SET), "--upstream", "127.0.0.1:1", "--ca", "/no/ca.crt"],
            ["/no/ca.crt"],
        ),
    ],
)
async def test_bad_flags_are_refused_with_a_reason(flags: list[str], words: list[str]) -> None:
    code, err = await run_refused(flags)
    assert code == 2
    for word in words:
        assert word in err


async def test_a_binding_it_cannot_serve_stops_it_at_start(tmp_path: Path) -> None:
    root = tmp_path / "protos"
    root.mkdir()
    (root / "bad.proto").write_text(
        'syntax = "proto3";\npackage bad.v1;\nimport "google/api/annotations.proto";\n'
        "message Req { string id = 1; }\n"
        "service Bad {\n"
        '  rpc Put(Req) returns (Req) { option (google.api.http) = {put: "/v1/{id}" body: "nope"}; }\n'
        '  rpc Get(Req) returns (Req) { option (google.api.http) = {get: "/v1/{id=**}/x"}; }\n'
        "}\n"
    )
    descriptor_set = compile_protos(tmp_path, root)
    code, err = await run_refused(
        [
            "--descriptor-set",
            str(descriptor_set),
            "--upstream",
            "127.0.0.1:1",
            "--upstream-plaintext",
        ]
    )
    assert code == 2
    assert "nope" in err


def _https_get(url: str, ca: Path) -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context, timeout=10
    )
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


async def test_serving_https_adds_hsts(echo: tuple[Path, EchoUpstream], certs_dir: Path) -> None:
    descriptor_set, upstream = echo
    served = IdentityFiles(certs_dir, "edge")
    ensure_certificates(certs_dir, "shop.local", "default", ["edge"])
    flags = (
        "--descriptor-set", str(descriptor_set), "--upstream", upstream.address,
        "--upstream-plaintext", "--tls-cert", str(served.cert), "--tls-key", str(served.key),
    )  # fmt: skip
    async with gateway(*flags) as url:
        assert url.startswith("https://")
        status, headers = await asyncio.to_thread(_https_get, f"{url}/v1/files/a", served.ca)
        assert status == 200
        assert headers["strict-transport-security"].startswith("max-age=")
