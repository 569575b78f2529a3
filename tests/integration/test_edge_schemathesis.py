"""schemathesis against the edge's own /openapi.json, with the mesh running: generated
requests to every operation (with a real token), and no answer may be a 5xx, or
differ from what the document says of its status, content type or schema."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.http import fetch
from tests.harness.mesh import MeshHarness, write_config

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CHEAP_HASHES = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


@pytest.fixture(scope="module")
async def edge(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[str]:
    config = write_config(
        tmp_path_factory.mktemp("schemathesis"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={
            "product": 1,
            "inventory": 1,
            "order": 1,
            "payment": 1,
            "shipping": 1,
            "auth": 1,
            "edge": 1,
        },
        overrides={
            "services": {
                "auth": {"port": 0, "metrics_port": 0, "settings": CHEAP_HASHES},
                # No rate limits: the generated requests come fast, from one address.
                "edge": {
                    "module": "gateway.edge",
                    "port": 0,
                    "metrics_port": 0,
                    "settings": {
                        "http_port": 0,
                        "require_token": ["shop.order.v1.OrderService/*"],
                        "per_address": None,
                        "per_user": None,
                    },
                },
            }
        },
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        endpoint = await mesh.instances["edge-1"].wait_ready(mesh.etcd)
        yield endpoint.metadata["url"]
    finally:
        await mesh.aclose()


async def token(edge: str) -> str:
    credentials = json.dumps({"username": f"st-{uuid.uuid4().hex[:8]}", "password": "fuzzing-pw"})
    headers = {"content-type": "application/json"}
    assert (await fetch(f"{edge}/v1/auth/register", "POST", credentials, headers)).status == 200
    login = await fetch(f"{edge}/v1/auth/login", "POST", credentials, headers)
    return str(login.json()["accessToken"])


@pytest.mark.timeout(300)
async def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(
    edge: str, tmp_path: Path
) -> None:
    bearer = await token(edge)
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")), "run", f"{edge}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", "25",
        "--header", f"Authorization: Bearer {bearer}",
        "--request-timeout", "15",
        "--workers", "2",
        "--seed", "1",
        "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=280)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = out.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases is not None, report[-3000:]
    assert cases.group(1) == cases.group(2)
    assert int(cases.group(1)) > 200  # every operation was reached, many times
