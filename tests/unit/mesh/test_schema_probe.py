"""mesh.schema_probe: every module's `--settings-schema` answer from one interpreter, in
a child process as meshctl runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def test_one_child_answers_for_every_module_each_on_its_own() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mesh.schema_probe", "services.product", "services.nowhere", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    answers = json.loads(run.stdout)
    assert "demo_products" in answers["services.product"]["schema"]["properties"]
    assert "No module named services.nowhere" in answers["services.nowhere"]["error"]
    # `python -m json --settings-schema` is no service: it fails, and says so
    assert "schema" not in answers["json"]
