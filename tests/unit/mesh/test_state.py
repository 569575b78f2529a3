"""state.json (mesh.state): written whole, and read whatever version of meshctl wrote it."""

from __future__ import annotations

import json
from pathlib import Path

from mesh.state import InstanceRecord, MeshState, read_state, write_state

# What the meshctl before supervision wrote: no address, restarts, state or control.
OLD_FILE = {
    "supervisor_pid": 41,
    "etcd_endpoint": "127.0.0.1:2379",
    "etcd_pid": 42,
    "ready": True,
    "instances": [
        {
            "service": "product",
            "instance_id": "product-1",
            "pid": 43,
            "port": 50051,
            "metrics_port": 9101,
            "log": "/x/.mesh/logs/product-1.log",
        }
    ],
}


def test_a_file_of_the_previous_version_reads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(OLD_FILE))

    state = read_state(tmp_path)

    assert state is not None
    assert (state.supervisor_pid, state.etcd_pid, state.control, state.etcd_restarts) == (
        41,
        42,
        "",
        0,
    )
    (record,) = state.instances
    assert (record.pid, record.address, record.restarts, record.state) == (
        43,
        "",
        0,
        "STARTING",
    )


def test_fields_of_a_newer_version_are_ignored(tmp_path: Path) -> None:
    newer = {**OLD_FILE, "shards": 3}
    newer["instances"] = [{**OLD_FILE["instances"][0], "zone": "a"}]  # type: ignore[index]
    (tmp_path / "state.json").write_text(json.dumps(newer))

    state = read_state(tmp_path)

    assert state is not None
    assert state.instances[0].instance_id == "product-1"


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    record = InstanceRecord(
        "product", "product-1", None, 0, 0, "log", restarts=3, state="CRASHLOOP"
    )
    state = MeshState(1, "127.0.0.1:1", 2, True, (record,), "RUNNING", 1, "/x/control.sock")

    write_state(tmp_path, state)

    assert read_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_no_file_or_a_broken_one_is_no_state(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    (tmp_path / "state.json").write_text('{"instances": 3')
    assert read_state(tmp_path) is None
    (tmp_path / "state.json").write_text('{"instances": []}')  # lacks the supervisor pid
    assert read_state(tmp_path) is None
