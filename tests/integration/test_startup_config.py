"""A service process and its configuration: a bad setting, the runtime's or the
service's own, stops it at start-up with exit code 2 and one JSON log line naming the
key, and `--settings-schema` prints the service's settings schema."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.mesh import REPO

Edit = Callable[[dict[str, Any]], None]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _bad_price(document: dict[str, Any]) -> None:
    document["services"]["product"]["settings"]["demo_products"][0]["price"] = "cheap"


def _bad_log_level(document: dict[str, Any]) -> None:
    document["telemetry"]["log_level"] = "verbose"


def _old_demo_section(document: dict[str, Any]) -> None:
    document["demo"] = {"products": []}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_bad_price, "services.product.settings.demo_products[0].price"),
        (_bad_log_level, "telemetry.log_level"),
        (_old_demo_section, "demo"),
    ],
    ids=["service setting", "log level", "unknown section"],
)
def test_a_bad_setting_stops_an_instance_with_exit_2_naming_it(
    tmp_path: Path, edit: Edit, key: str
) -> None:
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    edit(document)
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(document))

    # An etcd that is never reached: the configuration is refused before.
    result = run("services.product", "--config", "mesh.yaml", "--etcd", "127.0.0.1:1", cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == ""  # no traceback
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert f"{key}:" in record["message"]


@pytest.mark.parametrize(
    ("module", "setting"),
    [("services.product", "demo_products"), ("services.inventory", "opening_stock")],
)
def test_settings_schema_prints_the_services_settings(
    tmp_path: Path, module: str, setting: str
) -> None:
    result = run(module, "--settings-schema", cwd=tmp_path)  # needs no mesh.yaml

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert setting in schema["properties"]


def test_a_service_without_settings_prints_a_schema_that_takes_none(tmp_path: Path) -> None:
    # Every shop service has settings: this one, written here, has none.
    (tmp_path / "bare_service.py").write_text(
        "from mesh.server import run_service\n\n"
        "async def setup(runtime):\n    pass\n\n"
        'raise SystemExit(run_service("bare", setup))\n'
    )
    result = run("bare_service", "--settings-schema", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert (schema["properties"], schema["additionalProperties"]) == ({}, False)
