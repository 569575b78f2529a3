"""meshctl up / status / address / down, as a user or a script drives them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mesh.supervisor import free_port, read_state
from tests.e2e.conftest import SAGA_SERVICES, Workspace, alive, make_workspace
from tests.harness.mesh import REPO

EXPECTED = {
    ("product", "product-1"),
    ("product", "product-v2-1"),
    ("inventory", "inventory-1"),
    ("inventory", "inventory-2"),
    ("order", "order-1"),
    ("auth", "auth-1"),
    ("edge", "edge-1"),
    ("payment", "payment-1"),
    ("shipping", "shipping-1"),
    ("user", "user-1"),
    ("catalog", "catalog-1"),
    ("profile", "profile-1"),
    ("notification", "notification-1"),
    ("analytics", "analytics-1"),
    ("audit", "audit-1"),
}


def test_status_json_lists_every_instance_serving(running: Workspace) -> None:
    result = running.meshctl("status", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {(row["service"], row["id"]) for row in rows} == EXPECTED
    for row in rows:
        assert row["health"] == "SERVING"
        assert row["version"] == ("v2" if row["id"] == "product-v2-1" else "v1")
        assert row["dataplane"] == "sidecar"
        admin_host, _, admin_port = row["envoy_admin"].rpartition(":")
        assert admin_host == "127.0.0.1"
        assert int(admin_port) > 0
        host, _, port = row["address"].rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert row["metrics"].startswith("http://127.0.0.1:")
        assert alive(row["pid"])
        assert row["restarts"] == 0
    edge = next(row for row in rows if row["service"] == "edge")
    assert edge["url"].startswith("http://127.0.0.1:")
    with urllib.request.urlopen(edge["url"] + "/v1/products", timeout=10) as answer:
        assert answer.status == 200
    assert {row["url"] for row in rows if row["service"] != "edge"} == {""}


def test_status_table_shows_every_instance_etcd_and_the_broker(running: Workspace) -> None:
    result = running.meshctl("status")
    assert result.returncode == 0, result.stderr
    table, servers = result.stdout.strip().split("\n\n")
    etcd, controlplane, events = servers.splitlines()
    lines = table.splitlines()
    assert lines[0].split() == [
        "SERVICE", "ID", "ADDRESS", "VERSION", "HEALTH", "METRICS", "PID", "RESTARTS",
        "ENVOY", "ADMIN", "URL",
    ]  # fmt: skip
    assert {tuple(line.split()[:2]) for line in lines[1:]} == EXPECTED
    assert all(line.split()[4] == "SERVING" for line in lines[1:])
    assert all(line.split()[7] == "0" for line in lines[1:])
    state = read_state(running.root / ".mesh")
    assert state is not None
    assert etcd == f"etcd {state.etcd_endpoint}: RUNNING, pid {state.etcd_pid}, restarts 0"
    assert controlplane == (
        f"control plane {state.controlplane}: RUNNING, pid {state.controlplane_pid}, restarts 0"
    )
    assert (
        events
        == f"events nats {state.events_endpoint}: RUNNING, pid {state.events_pid}, restarts 0"
    )
    assert state.events_endpoint.startswith("127.0.0.1:")
    assert alive(state.events_pid or 0)
    assert all(line.split()[8].startswith("http://127.0.0.1:") for line in lines[1:])
    urls = {line.split()[0]: line.split()[9] for line in lines[1:]}
    assert urls.pop("edge").startswith("http://127.0.0.1:")
    assert set(urls.values()) == {"-"}


def test_address_prints_a_serving_instance(running: Workspace) -> None:
    rows = json.loads(running.meshctl("status", "--json").stdout)
    inventory = {row["address"] for row in rows if row["service"] == "inventory"}
    result = running.meshctl("address", "inventory")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in inventory
    missing = running.meshctl("address", "nothing")
    assert missing.returncode == 1
    assert "nothing" in missing.stderr


def test_another_folder_reaches_the_mesh_by_config_flag_or_environment(
    running: Workspace, tmp_path: Path
) -> None:
    elsewhere = Workspace(tmp_path)  # no mesh.yaml here
    config = str(running.root / "mesh.yaml")
    assert elsewhere.meshctl("status").returncode == 2  # ./mesh.yaml is missing

    by_flag = elsewhere.meshctl("--config", config, "status", "--json")
    assert by_flag.returncode == 0, by_flag.stderr
    assert {(row["service"], row["id"]) for row in json.loads(by_flag.stdout)} == EXPECTED

    by_env = elsewhere.meshctl("status", "--json", env={"SHOPMESH_CONFIG": config})
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout) == json.loads(by_flag.stdout)


def test_up_writes_the_schema_for_editors(running: Workspace) -> None:
    schema = json.loads((running.root / ".mesh" / "mesh.schema.json").read_text())

    named = schema["properties"]["services"]["properties"]
    assert set(named) == {
        "product",
        "inventory",
        "order",
        "payment",
        "shipping",
        "user",
        "auth",
        "edge",
        "catalog",
        "profile",
        "notification",
        "analytics",
        "audit",
    }
    document = yaml.safe_load((running.root / "mesh.yaml").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []


def test_a_second_up_is_refused_while_one_runs(running: Workspace) -> None:
    result = running.meshctl("up", "--detach")
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_down_stops_every_process_and_is_idempotent(
    tmp_path: Path, binaries: dict[str, str]
) -> None:
    workspace = make_workspace(tmp_path, services=SAGA_SERVICES)
    with workspace.detached_up() as pids:
        assert len(pids) == 14  # supervisor, etcd, control plane, broker, ten instances

        result = workspace.meshctl("down")
        assert result.returncode == 0, result.stderr
        assert not [pid for pid in pids if alive(pid)]
        assert not (tmp_path / ".mesh" / "state.json").exists()

        again = workspace.meshctl("down")
        assert again.returncode == 0
        assert "No mesh is running" in again.stdout
        status = workspace.meshctl("status")
        assert status.returncode == 1
        assert "no mesh is running" in status.stderr


def _read_until(process: subprocess.Popen[str], output: list[str], wanted: str) -> None:
    """Read `process`'s output into `output` until a line that starts with `wanted`."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        output.append(line)
        if line.startswith(wanted):
            return
        assert time.monotonic() < deadline, "".join(output)
    raise AssertionError(f"no line {wanted!r} before the output ended:\n{''.join(output)}")


def test_foreground_up_reports_a_restart_and_stops_everything_on_ctrl_c(
    tmp_path: Path, binaries: dict[str, str]
) -> None:
    workspace = make_workspace(tmp_path, services=SAGA_SERVICES)
    output: list[str] = []
    with workspace.foreground_up() as process:
        _read_until(process, output, "Running.")
        pids = workspace.pids()
        assert len(pids) == 14, "".join(
            output
        )  # supervisor, etcd, control plane, broker, 10 instances
        assert any("grpcurl -cacert" in line for line in output)
        state = read_state(tmp_path / ".mesh")
        assert state is not None
        (order,) = [r for r in state.instances if r.instance_id == "order-1"]
        assert order.pid is not None

        os.kill(order.pid, signal.SIGKILL)
        _read_until(process, output, "order-1 SERVING again at 127.0.0.1:")
        assert "! order-1 exited with code -9; restarting in 1s" in "".join(output)
        assert any(line.startswith("order-1 restarted (restart 1, pid ") for line in output)
        pids = workspace.pids()  # order-1's new pid instead of the old one

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
        output.append(rest)
        assert process.returncode == 0, "".join(output)
        assert "Stopped." in rest
        assert "exited with code" not in rest  # stopping is no crash
        assert not [pid for pid in pids if alive(pid)]


def test_a_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path, inventory={"replicas": 0})
    result = workspace.meshctl("status")
    assert result.returncode == 2
    assert "services.inventory.replicas" in result.stderr


def _settings_of(schema: dict[str, Any], service: str) -> dict[str, Any]:
    entry: dict[str, Any] = schema["properties"]["services"]["properties"][service]
    return entry["properties"]["settings"]


def test_config_schema_holds_each_services_settings_and_mesh_yaml_fits_it(
    tmp_path: Path,
) -> None:
    workspace = make_workspace(tmp_path)

    result = workspace.meshctl("config", "schema")

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "demo_products" in _settings_of(schema, "product")["properties"]
    assert "opening_stock" in _settings_of(schema, "inventory")["properties"]
    validator = jsonschema.Draft202012Validator(schema)
    for path in (REPO / "mesh.yaml", tmp_path / "mesh.yaml"):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    document["services"]["inventory"]["settings"]["opening_stock"]["sku-mug"] = -1
    assert not validator.is_valid(document)


def test_config_schema_leaves_a_failing_services_settings_free_form(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path, broken={"module": "services.does_not_exist"})

    result = workspace.meshctl("config", "schema")

    assert result.returncode == 0, result.stderr
    assert "services.broken.settings left free-form" in result.stderr
    named = json.loads(result.stdout)["properties"]["services"]["properties"]
    assert set(named) == {
        "product",
        "inventory",
        "order",
        "payment",
        "shipping",
        "user",
        "auth",
        "edge",
        "catalog",
        "profile",
        "notification",
        "analytics",
        "audit",
    }


def test_config_schema_of_the_runtime_only_needs_no_mesh_yaml(tmp_path: Path) -> None:
    result = Workspace(tmp_path).meshctl("config", "schema", "--runtime-only")

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["properties"]["services"]["properties"] == {}
    assert "telemetry" in schema["properties"]


@pytest.mark.usefixtures("binaries")
def test_up_shows_why_an_instance_cannot_start_and_leaves_nothing_running(tmp_path: Path) -> None:
    workspace = make_workspace(
        tmp_path, services=("product",), broken={"module": "services.does_not_exist"}
    )
    result = workspace.meshctl("up", "--detach")
    try:
        assert result.returncode == 1
        assert "broken-1 exited" in result.stderr
        assert "No module named services.does_not_exist" in result.stderr
        # The supervisor has exited; nothing it started may remain.
        leftovers = subprocess.run(
            ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
        ).stdout.split()
        assert leftovers == []
    finally:
        workspace.kill_leftovers()


def test_certs_are_created_once_then_kept(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    first = workspace.meshctl("certs")
    assert first.returncode == 0, first.stderr
    # ca, admin, controlplane and one per service: product, inventory, order, payment,
    # shipping, user, auth, edge, catalog, profile, notification, analytics, audit
    assert first.stdout.count("created") == 16
    second = workspace.meshctl("certs")
    assert second.stdout.count("kept") == 16
    key = tmp_path / "certs" / "admin.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_ctrl_c_while_starting_stops_what_was_started(
    tmp_path: Path, binaries: dict[str, str]
) -> None:
    workspace = make_workspace(tmp_path, services=SAGA_SERVICES)
    document = yaml.safe_load((tmp_path / "mesh.yaml").read_text())
    document["etcd"]["endpoint"] = f"127.0.0.1:{free_port()}"  # nobody there: never ready
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(document))
    with workspace.foreground_up() as process:
        state = tmp_path / ".mesh" / "state.json"
        deadline = time.monotonic() + 30
        while not state.exists():  # the instances have been spawned
            assert time.monotonic() < deadline, "meshctl up never spawned its instances"
            time.sleep(0.05)
        pids = workspace.pids()
        assert (
            len(pids) == 13
        )  # supervisor, control plane, broker, 10 instances; etcd is external here

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 130, output
        assert "Stopped before the mesh was ready." in output
        assert not [pid for pid in pids if alive(pid)]


def test_killing_the_supervisor_stops_everything_and_meshctl_says_it_is_not_running(
    tmp_path: Path, binaries: dict[str, str]
) -> None:
    workspace = make_workspace(tmp_path, services=SAGA_SERVICES)
    with workspace.detached_up() as pids:
        supervisor, children = pids[0], pids[1:]
        os.kill(supervisor, signal.SIGKILL)  # no chance to clean up
        deadline = time.monotonic() + 20
        while [pid for pid in children if alive(pid)]:
            assert time.monotonic() < deadline, f"orphans: {[p for p in children if alive(p)]}"
            time.sleep(0.1)

        for command in (
            ["status"],
            ["status", "--json"],
            ["address", "product"],
            ["restart", "product"],
        ):
            result = workspace.meshctl(*command)
            assert result.returncode == 1, (command, result.stdout)
            assert result.stdout == ""
            assert (
                f"the mesh is not running: its supervisor (pid {supervisor}) is gone"
                in result.stderr
            )
            assert "meshctl up" in result.stderr


def _business_metrics(url: str) -> dict[str, float]:
    """analytics' business series, by name (labels summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_the_demo_tells_the_story_and_moves_the_business_metrics(running: Workspace) -> None:
    rows = json.loads(running.meshctl("status", "--json").stdout)
    [analytics] = [row["metrics"] for row in rows if row["service"] == "analytics"]
    before = _business_metrics(analytics)

    result = running.meshctl("demo", "--json", timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    steps = json.loads(result.stdout)
    placed, declined = steps[3], steps[4]
    assert placed["details"]["status"] == "ORDER_STATUS_CONFIRMED"
    assert declined["details"]["status"] == "ORDER_STATUS_CANCELLED"
    assert "reserve_stock COMPENSATED" in declined["outcome"]
    assert "charge_payment FAILED" in declined["outcome"]
    assert all(len(step["trace_id"]) == 32 for step in steps[1:])
    wanted = {
        "user_registrations_total": 1,
        "payment_success_total": 1,
        "cart_abandonment_total": 1,
        "order_value_dollars_count": 2,
    }
    deadline = time.monotonic() + 20
    while True:  # the counts come from events: a moment after the calls
        after = _business_metrics(analytics)
        moved = {name: after.get(name, 0) - before.get(name, 0) for name in wanted}
        if moved == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert moved == wanted
