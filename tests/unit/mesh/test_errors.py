"""mesh.errors' tree names every public exception the runtime defines, and each of them is
a MeshError, so that callers can catch the runtime's failures by one base class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import mesh
import mesh.errors

ANSWERS = "mesh.problems"  # a servicer's failures for its callers: not mesh errors


def public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(mesh.__path__, prefix="mesh."):
        if info.name == ANSWERS:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("mesh.")
                and value.__module__ != ANSWERS
                and not name.startswith("_")
            ):
                found[name] = value
    return found


def test_every_public_mesh_exception_is_a_mesh_error() -> None:
    assert {
        name
        for name, cls in public_exceptions().items()
        if not issubclass(cls, mesh.errors.MeshError)
    } == set()


def test_the_documented_tree_names_every_one() -> None:
    tree = mesh.errors.__doc__ or ""
    named = set(re.findall(r"[├└]── (\w+)|^    (MeshError)$", tree, re.M))
    documented = {name for pair in named for name in pair if name}
    assert set(public_exceptions()) - documented == set()
    assert len(public_exceptions()) >= 10
