"""Compile protos/ into generated/: Python messages, .pyi stubs, gRPC stubs, one descriptor set.

Third-party imports (google/api, google/type, ...) are resolved from the installed
googleapis-common-protos package and copied into third_party/googleapis, the folder
buf.yaml names, so neither buf nor protoc needs a remote dependency.

The descriptor set also holds grpc.health.v1, which every instance serves, so that
`grpcurl -protoset generated/shop.binpb` can check health as an identity that may not
use server reflection. (grpcio-health-checking ships no .proto: its compiled
descriptor is added as it is.)
"""

from __future__ import annotations

import filecmp
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import google.api
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_tools import protoc

from mesh.errors import MeshError

__all__ = ["CodegenError", "Layout", "check", "generate", "stage_third_party"]

DESCRIPTOR_SET = "shop.binpb"
_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)


class CodegenError(MeshError):
    """protoc failed, or an import could not be found."""


@dataclass(frozen=True)
class Layout:
    """Where the sources and outputs live, relative to the repository root."""

    root: Path

    @property
    def protos(self) -> Path:
        return self.root / "protos"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def third_party(self) -> Path:
        return self.root / "third_party" / "googleapis"


def _googleapis_root() -> Path:
    # google.api is a namespace-less package inside googleapis-common-protos; its
    # parent's parent holds google/api/*.proto, google/type/*.proto, ...
    return Path(next(iter(google.api.__path__))).parent.parent


def _wkt_root() -> Path:
    return Path(protoc.__file__).parent / "_proto"


def _own_protos(layout: Layout) -> list[Path]:
    files = sorted(layout.protos.rglob("*.proto"))
    if not files:
        raise CodegenError(f"no .proto files under {layout.protos}")
    return files


def _third_party_imports(sources: Iterable[Path], own_root: Path) -> list[str]:
    """Every import, transitively, that is neither ours nor a well-known type."""
    google_root, wkt_root = _googleapis_root(), _wkt_root()
    pending = list(sources)
    found: set[str] = set()
    while pending:
        text = pending.pop().read_text()
        for name in _IMPORT.findall(text):
            if name in found or (own_root / name).exists() or (wkt_root / name).exists():
                continue
            candidate = google_root / name
            if not candidate.exists():
                raise CodegenError(f"import {name!r} is neither in protos/ nor installed")
            found.add(name)
            pending.append(candidate)
    return sorted(found)


def stage_third_party(layout: Layout, into: Path | None = None) -> list[str]:
    """Copy the third-party .proto files our protos import into `into` (default:
    third_party/googleapis, which buf.yaml names); returns their names."""
    target_root = into or layout.third_party
    names = _third_party_imports(_own_protos(layout), layout.protos)
    if target_root.exists():
        shutil.rmtree(target_root)
    for name in names:
        target = target_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_googleapis_root() / name, target)
    return names


def _compile(layout: Layout, out: Path, third_party: Path) -> None:
    sources = [str(p.relative_to(layout.protos)) for p in _own_protos(layout)]
    args = [
        "grpc_tools.protoc",
        f"-I{layout.protos}",
        f"-I{third_party}",
        f"-I{_wkt_root()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise CodegenError("protoc failed; its messages are above")
    _add_health(out / DESCRIPTOR_SET)
    # Regular packages (not namespace ones) so setuptools and mypy find them.
    for directory in sorted({p.parent for p in out.rglob("*_pb2.py")}):
        while directory != out:
            (directory / "__init__.py").touch()
            directory = directory.parent


def _add_health(descriptor_set: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    health = descriptor_pb2.FileDescriptorProto.FromString(health_pb2.DESCRIPTOR.serialized_pb)
    if all(f.name != health.name for f in files.file):
        files.file.append(health)
        descriptor_set.write_bytes(files.SerializeToString(deterministic=True))


def generate(layout: Layout) -> list[Path]:
    """Regenerate generated/ from protos/; returns the files written."""
    stage_third_party(layout)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _compile(layout, out, layout.third_party)
        if layout.generated.exists():
            shutil.rmtree(layout.generated)
        shutil.copytree(out, layout.generated)
    return sorted(p for p in layout.generated.rglob("*") if p.is_file())


def check(layout: Layout) -> list[str]:
    """Paths (relative to generated/) that regenerating would add, change or remove.
    Writes nothing in the repository."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh, third_party = Path(tmp) / "out", Path(tmp) / "third_party"
        fresh.mkdir()
        stage_third_party(layout, third_party)
        _compile(layout, fresh, third_party)
        return _differences(fresh, layout.generated)


def _differences(fresh: Path, current: Path) -> list[str]:
    def files(base: Path) -> set[str]:
        if not base.exists():
            return set()
        return {
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    wanted, present = files(fresh), files(current)
    changed = {
        name
        for name in wanted & present
        if not filecmp.cmp(fresh / name, current / name, shallow=False)
    }
    return sorted((wanted ^ present) | changed)
