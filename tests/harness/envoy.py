"""A test's view of the sidecars: each instance's Envoy admin, read and changed over
plain HTTP as a user does with curl."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.harness.mesh import MeshHarness

__all__ = ["admin_get", "admin_of", "admin_post", "counter", "envoy_pid", "hosts"]


def admin_of(mesh: MeshHarness, instance_id: str) -> str:
    """host:port of the admin of `instance_id`'s sidecar, as it registered it."""
    endpoint = mesh.instances[instance_id].endpoint
    assert endpoint is not None, f"{instance_id} is not serving"
    return endpoint.metadata["envoy_admin"]


def admin_get(admin: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as response:
        return str(response.read().decode())


def admin_post(admin: str, path: str) -> str:
    request = urllib.request.Request(f"http://{admin}{path}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def counter(admin: str, name: str) -> int:
    """The stat `name` of a sidecar, 0 before it exists."""
    for line in admin_get(admin, f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def hosts(admin: str, cluster: str) -> dict[str, str]:
    """The hosts of `cluster` in a sidecar's /clusters: address -> health flags
    ("healthy", or e.g. "/failed_outlier_check")."""
    found: dict[str, str] = {}
    for line in admin_get(admin, "/clusters").splitlines():
        name, _, rest = line.partition("::")
        if name != cluster:
            continue
        address, _, stat = rest.partition("::")
        if stat.startswith("health_flags::"):
            found[address] = stat.removeprefix("health_flags::")
        elif address[:1].isdigit():
            found.setdefault(address, "")
    return found


def envoy_pid(instance_id: str) -> int:
    """The pid of the Envoy whose bootstrap is `instance_id`'s."""
    marker = f"/{instance_id}.envoy.bootstrap.json".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError(f"no Envoy of {instance_id} runs")
