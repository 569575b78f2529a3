"""Every grpcurl, meshctl and curl command in the README's shell blocks, run against a
live mesh in README order (curl on the sidecars' Envoy admin). A line ending in `# refused: A, B` must fail and mention A and B."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import make_workspace
from tests.harness.mesh import REPO

# Lines the README shows that are not run here, and why.
NOT_RUN = {
    "make up": "runs `meshctl up` in the foreground: test_meshctl stops it with Ctrl-C",
    "make test": "is this test suite",
    ". .venv/bin/activate": "the test puts the venv's bin on PATH itself",
    "python -m gateway --descriptor-set generated/shop.binpb --upstream $(meshctl address "
    "product) --ca certs/ca.crt --cert certs/admin.crt --key certs/admin.key --listen "
    "127.0.0.1:8081": "serves in the foreground: tests/integration/test_gateway_cli.py "
    "runs it in front of a mesh instance",
}


@dataclass(frozen=True)
class Line:
    command: str
    refused: tuple[str, ...]  # words a refused command's output must contain; () = must succeed


def readme_lines() -> list[Line]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for raw in block.splitlines():
            command, _, comment = raw.partition("  #")
            command = command.strip()
            if not command:
                continue
            refused = comment.strip().removeprefix("refused:") if "refused:" in comment else ""
            lines.append(Line(command, tuple(w.strip() for w in refused.split(",") if w.strip())))
    return lines


def test_every_line_is_either_run_or_explained() -> None:
    for line in readme_lines():
        runnable = line.command.split()[0] in ("grpcurl", "meshctl", "curl") or re.match(
            r"^[A-Z_]+=", line.command
        )
        assert runnable or line.command in NOT_RUN, (
            f"README line neither run nor explained: {line.command}"
        )
    commands = [line.command for line in readme_lines()]
    assert commands.index("meshctl up --detach") < commands.index("meshctl down")


@pytest.mark.timeout(420)  # fifteen instances with sidecars on two cores, then every line
@pytest.mark.usefixtures("binaries")
def test_readme_commands_work_against_a_live_mesh(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    (tmp_path / "generated").symlink_to(REPO / "generated")  # for grpcurl -protoset
    lines = [line for line in readme_lines() if line.command not in NOT_RUN]
    # The mesh must be up before the calls that the README shows first: start it as the
    # README's script section does, and run its `meshctl up --detach` line at that point.
    up = next(line for line in lines if line.command == "meshctl up --detach")
    down = next(line for line in lines if line.command == "meshctl down")
    ordered = [up, *(line for line in lines if line not in (up, down)), down]

    marker = "__readme_line_exit__"
    # `{ ...; } 2>&1` keeps each line's errors with its output and its variables in the shell.
    script = "\n".join(f'{{ {line.command}\n}} 2>&1\necho "{marker} $?"' for line in ordered)
    try:
        result = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=workspace.env(),
            capture_output=True, text=True, timeout=360,
        )  # fmt: skip
    finally:
        workspace.kill_leftovers()
    outputs = re.split(rf"{marker} (\d+)\n", result.stdout)
    assert len(outputs) == 2 * len(ordered) + 1, result.stdout + result.stderr
    for index, line in enumerate(ordered):
        output, code = outputs[2 * index], int(outputs[2 * index + 1])
        if line.refused:
            assert code != 0, f"expected refusal: {line.command}\n{output}"
            for word in line.refused:
                assert word in output, f"{word!r} missing for {line.command}\n{output}"
        else:
            assert code == 0, f"failed ({code}): {line.command}\n{output}\n{result.stderr}"
    _check_traced_call(tmp_path / ".mesh" / "traces")


def _check_traced_call(traces: Path) -> None:
    """The README's call with a sampled traceparent left spans in every service its
    saga calls."""
    wanted = re.search(r"traceparent: 00-([0-9a-f]{32})-", (REPO / "README.md").read_text())
    assert wanted is not None, "the README shows no traced call"
    services = {
        span["service"]
        for path in traces.glob("*.jsonl")
        for span in map(json.loads, path.read_text().splitlines())
        if span["trace_id"] == wanted.group(1)
    }
    assert services == {"order", "product", "inventory", "payment", "shipping"}
