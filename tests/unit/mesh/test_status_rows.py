"""`meshctl status` rows from the supervisor's records (mesh.supervisor.supervisor_status),
for instances that need no health check: waiting to be restarted, or gone."""

from __future__ import annotations

from pathlib import Path

from mesh.config import MeshConfig, ServiceSpec
from mesh.state import InstanceRecord, MeshState
from mesh.supervisor import supervisor_status

CONFIG = MeshConfig(
    path=Path("mesh.yaml"),
    services={"product": ServiceSpec("product", "services.product", version="v2")},
)
DEAD_PID = 2**22 + 1  # above Linux's pid_max default of 2**22: never a live process


def _record(instance_id: str, **fields: object) -> InstanceRecord:
    values: dict[str, object] = {"pid": None, "port": 0, "metrics_port": 0, "log": ""}
    return InstanceRecord("product", instance_id, **(values | fields))  # type: ignore[arg-type]


async def test_an_instance_waiting_to_restart_shows_why_with_no_pid() -> None:
    state = MeshState(
        1,
        "127.0.0.1:1",
        None,
        True,
        (
            _record("product-2", state="CRASHLOOP", restarts=4, version="v1"),
            _record("product-1", state="RESTARTING", restarts=1),
        ),
    )

    rows = await supervisor_status(CONFIG, state)

    assert [(r.id, r.health, r.restarts, r.pid, r.address) for r in rows] == [
        ("product-1", "RESTARTING", 1, None, ""),
        ("product-2", "CRASHLOOP", 4, None, ""),
    ]
    assert [r.version for r in rows] == ["v2", "v1"]  # mesh.yaml's when none is recorded


async def test_an_instance_whose_process_is_gone_is_down() -> None:
    record = _record("product-1", pid=DEAD_PID, state="SERVING", address="127.0.0.1:9")
    state = MeshState(1, "127.0.0.1:1", None, True, (record,))

    (row,) = await supervisor_status(CONFIG, state)

    assert (row.health, row.pid, row.to_json()["restarts"]) == ("DOWN", None, 0)
