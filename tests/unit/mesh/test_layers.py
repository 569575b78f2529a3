"""The dependency rules of design.md, checked on the source: mesh/ imports no service
and no edge, and each mesh module imports only modules of lower layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MESH = Path(__file__).resolve().parents[3] / "mesh"

# Lowest first; a module may import its own layer's package and those before it.
LAYERS = [
    {"errors", "inbound", "backoff", "codegen", "tasks", "process", "schema_probe"},
    {"problems", "config", "state", "storage"},
    {"identity", "authz"},
    {"registry"},
    {"events"},
    {"envoy"},
    {"telemetry"},
    {"client"},
    {"xds"},
    {"server"},
    {"supervisor"},
    {"cli"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "mesh":
            found.update(f"mesh.{alias.name}" for alias in node.names)  # from mesh import x
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _unit(path: Path) -> str:
    """mesh/client/_channel.py -> "client"; mesh/config.py -> "config"."""
    relative = path.relative_to(MESH)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


SOURCES = sorted(p for p in MESH.rglob("*.py") if p.name != "__init__.py" or p.parent != MESH)


def test_every_module_has_a_layer() -> None:
    assert {_unit(path) for path in SOURCES} <= set(LAYER_OF)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(MESH)))
def test_mesh_imports_only_lower_layers_and_no_service(path: Path) -> None:
    unit = _unit(path)
    for module in _imports(path):
        top = module.split(".")[0]
        assert top not in ("services", "gateway"), f"{path.name} imports {module}"
        if top == "mesh" and module != "mesh":
            target = module.split(".")[1]
            assert LAYER_OF[target] <= LAYER_OF[unit], (
                f"{unit} (layer {LAYER_OF[unit]}) imports {module}"
            )


def test_a_package_import_is_checked_like_a_module_import(tmp_path: Path) -> None:
    source = tmp_path / "lower.py"
    source.write_text("from mesh import client, inbound\nimport mesh.server\n")
    assert _imports(source) == {"mesh.client", "mesh.inbound", "mesh.server"}
