"""Every mesh module's __all__ names what exists, and each subpackage exports exactly it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import mesh

PACKAGES = [
    "mesh.client",
    "mesh.envoy",
    "mesh.events",
    "mesh.registry",
    "mesh.server",
    "mesh.supervisor",
    "mesh.telemetry",
    "mesh.xds",
]


def modules_with_all() -> list[str]:
    names = ["mesh"]
    names += [info.name for info in pkgutil.walk_packages(mesh.__path__, prefix="mesh.")]
    return sorted(name for name in names if hasattr(importlib.import_module(name), "__all__"))


MODULES = modules_with_all()


def test_every_package_and_private_module_is_checked() -> None:
    assert set(PACKAGES) <= set(MODULES)
    assert {"mesh.client._channel", "mesh.config", "mesh.telemetry._metrics"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    exported = importlib.import_module(name).__all__
    module = importlib.import_module(name)

    missing = [item for item in exported if not hasattr(module, item)]

    assert missing == []
    assert len(exported) == len(set(exported))


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_expose_exactly_their_all(name: str) -> None:
    package: ModuleType = importlib.import_module(name)

    public = {
        item
        for item, value in vars(package).items()
        if not item.startswith("_") and not inspect.ismodule(value)
    }

    assert public == set(package.__all__)
