"""mesh.codegen.check: generated/ is fresh in the repository, and an edited .proto shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mesh.codegen import Layout, check

REPO = Path(__file__).resolve().parents[3]


def test_generated_code_matches_the_protos() -> None:
    # Writes only a temporary directory and the git-ignored third_party/.
    assert check(Layout(REPO)) == []


@pytest.fixture
def copy(tmp_path: Path) -> Layout:
    for folder in ("protos", "generated"):
        shutil.copytree(
            REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return Layout(tmp_path)


def test_an_unchanged_copy_is_fresh(copy: Layout) -> None:
    assert check(copy) == []


def test_a_new_field_shows_as_changed_files(copy: Layout) -> None:
    proto = copy.protos / "shop" / "inventory" / "v1" / "inventory.proto"
    text = proto.read_text()
    anchor = "message GetStockRequest {"
    assert anchor in text
    proto.write_text(text.replace(anchor, anchor + "\n  string unit_test_only = 999;", 1))

    changed = check(copy)

    assert "shop/inventory/v1/inventory_pb2.py" in changed
    assert "shop/inventory/v1/inventory_pb2.pyi" in changed
    assert "shop.binpb" in changed
    assert not any(name.startswith("shop/product/") for name in changed)


def test_a_removed_generated_file_is_reported(copy: Layout) -> None:
    (copy.generated / "shop" / "order" / "v1" / "order_pb2_grpc.py").unlink()

    assert check(copy) == ["shop/order/v1/order_pb2_grpc.py"]


def test_a_stray_generated_file_is_reported(copy: Layout) -> None:
    (copy.generated / "shop" / "leftover_pb2.py").write_text("")

    assert check(copy) == ["shop/leftover_pb2.py"]
