"""The subjects: real `product` instances, started the way the mesh starts one.

An etcd on free loopback ports and a mesh.yaml in a temp folder (the repo's own
document, with every port 0, the temp folder's state and certs, that etcd, the direct
(proxyless) data plane and only the product service), the mesh's certificates, then
`python -m services.product` through
mesh.supervisor.InstanceProcess: mTLS, the authz interceptor, Prometheus metrics,
OpenTelemetry tracing to its JSON-lines file at the configured sample ratio, and etcd
registration, exactly as `meshctl up` runs it.

A variant of that mesh.yaml (`MeshEnvironment.variant`) overrides only the trace
sample ratio and has its own state folder (so its own product database and trace
file); the same certificates and etcd serve both. `MeshEnvironment.custom` writes any
other variant (bench.sidecar's: sidecars, more services, its own etcd prefix).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.type import money_pb2
from prometheus_client.parser import text_string_to_metric_families
from shop.product.v1 import product_pb2, product_pb2_grpc

from bench.aio import to_completion
from mesh.config import ADMIN_IDENTITY, MeshConfig, load_config
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.registry import Endpoint, EtcdClient
from mesh.supervisor import EtcdServer, InstanceProcess

__all__ = [
    "GET_PRODUCT",
    "INSTANCE_ID",
    "PRODUCT_ID",
    "MeshEnvironment",
    "ProductInstance",
    "create_product",
    "handled_calls",
    "mesh_environment",
    "permission_denied_for",
    "product_instance",
    "traced_calls",
]

REPO = Path(__file__).resolve().parents[1]
SERVICE = "product"
INSTANCE_ID = "product-1"
PRODUCT_ID = "bench-espresso"
GET_PRODUCT = "/shop.product.v1.ProductService/GetProduct"

Report = Callable[[str], None]


@dataclass(frozen=True)
class MeshEnvironment:
    root: Path
    config: MeshConfig  # the repo's mesh.yaml, as described above
    etcd: EtcdServer

    @property
    def certs_dir(self) -> Path:
        return self.config.certs_dir

    def variant(self, name: str, *, trace_sample_ratio: float) -> MeshConfig:
        """The same mesh.yaml with another trace sample ratio, as `<root>/<name>.yaml`,
        with its state in `<root>/state-<name>`."""
        return _write_config(
            self.root,
            self.etcd.endpoint,
            name=name,
            telemetry={"trace_sample_ratio": trace_sample_ratio},
        )

    def custom(
        self, name: str, *, services: Sequence[str], edit: Callable[[dict[str, Any]], None]
    ) -> MeshConfig:
        """The same mesh.yaml with `services` (each as the repo declares it), changed
        by `edit` (the parsed document), as `<root>/<name>.yaml` with its state in
        `<root>/state-<name>`."""
        return _write_config(self.root, self.etcd.endpoint, name=name, services=services, edit=edit)


@dataclass(frozen=True)
class ProductInstance:
    process: InstanceProcess
    endpoint: Endpoint

    @property
    def address(self) -> str:
        return self.endpoint.address

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def instance_id(self) -> str:
        return self.process.instance_id

    @property
    def trace_file(self) -> Path:
        return self.process.config.state_dir / "traces" / f"{self.instance_id}.jsonl"

    @property
    def trace_sample_ratio(self) -> float:
        return self.process.config.telemetry.trace_sample_ratio


def _write_config(
    root: Path,
    etcd_endpoint: str,
    *,
    name: str = "mesh",
    telemetry: dict[str, Any] | None = None,
    services: Sequence[str] = (SERVICE,),
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> MeshConfig:
    """The repo's mesh.yaml with only `services`, every port 0, then `edit`ed."""
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    document["mesh"]["state_dir"] = str(root / ("state" if name == "mesh" else f"state-{name}"))
    document["mesh"]["certs_dir"] = str(root / "certs")
    # The subjects above are proxyless, whatever the repo's file says (sidecar.py edits
    # its own variant back to sidecars).
    document["mesh"]["dataplane"] = "direct"
    document["etcd"]["endpoint"] = etcd_endpoint
    for spec in document["services"].values():
        spec["port"] = 0
        spec["metrics_port"] = 0
        spec["envoy_admin_port"] = 0
    document["services"] = {service: document["services"][service] for service in services}
    if telemetry:
        document.setdefault("telemetry", {}).update(telemetry)
    if edit is not None:
        edit(document)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(path)


@asynccontextmanager
async def mesh_environment(root: Path, report: Report) -> AsyncIterator[MeshEnvironment]:
    """etcd, mesh.yaml and certificates under `root`; etcd is stopped on exit. etcd
    starts on the calling thread's cores (it inherits them)."""
    etcd = EtcdServer(root / "etcd", log_path=root / "logs" / "etcd.log")
    try:
        await etcd.start()
        config = _write_config(root, etcd.endpoint)
        ensure_certificates(
            config.certs_dir, config.trust_domain, config.namespace, config.all_identities()
        )
        report(f"mesh environment in {root}: etcd {etcd.endpoint} (pid {etcd.pid}), certificates")
        yield MeshEnvironment(root, config, etcd)
    finally:
        await to_completion(etcd.stop())


@asynccontextmanager
async def product_instance(
    env: MeshEnvironment,
    config: MeshConfig,
    instance_id: str,
    launching: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> AsyncIterator[ProductInstance]:
    """One product instance, registered and SERVING; stopped (gracefully) on exit. Its
    process is started within `launching()` (the benchmark pins it to a core there)."""
    process = InstanceProcess(config, config.service(SERVICE), instance_id, env.etcd.endpoint)
    try:
        with launching():
            await process.start()
        async with EtcdClient(env.etcd.endpoint) as etcd:
            endpoint = await process.wait_ready(etcd)
        yield ProductInstance(process, endpoint)
    finally:
        await to_completion(process.stop())


def _credentials(env: MeshEnvironment, identity: str) -> grpc.ChannelCredentials:
    return channel_credentials(IdentityFiles(env.certs_dir, identity))


async def create_product(env: MeshEnvironment, address: str) -> bytes:
    """Create the benchmark's product as the admin identity and check that GetProduct
    returns it; returns the serialized GetProductRequest the load will send."""
    product = product_pb2.Product(
        product_id=PRODUCT_ID,
        name="Espresso beans, 1 kg (benchmark)",
        description="Created by bench/ before measuring GetProduct.",
        price=money_pb2.Money(currency_code="EUR", units=23, nanos=900_000_000),
    )
    request = product_pb2.GetProductRequest(product_id=PRODUCT_ID)
    async with grpc.aio.secure_channel(address, _credentials(env, ADMIN_IDENTITY)) as channel:
        # Generated stubs have no .pyi: untyped, their methods return Any.
        stub: Any = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
        await stub.CreateProduct(product_pb2.CreateProductRequest(product=product), timeout=10)
        got = await stub.GetProduct(request, timeout=10)
    if got.product != product:
        raise RuntimeError(f"GetProduct returned {got.product} instead of {product}")
    return request.SerializeToString()


async def permission_denied_for(env: MeshEnvironment, address: str, identity: str) -> bool:
    """Whether GetProduct as `identity` (a mesh identity authz does not allow) is
    PERMISSION_DENIED: evidence that the authz interceptor is in the path."""
    request = product_pb2.GetProductRequest(product_id=PRODUCT_ID)
    async with grpc.aio.secure_channel(address, _credentials(env, identity)) as channel:
        stub: Any = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            await stub.GetProduct(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.PERMISSION_DENIED
    return False


def handled_calls(instance: ProductInstance) -> int:
    """grpc_server_handled_total of GetProduct with code OK, from the instance's /metrics."""
    url = f"http://{instance.endpoint.metadata['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "grpc_server_handled_total"
                and labels.get("grpc_method") == "GetProduct"
                and labels.get("grpc_code") == "OK"
            ):
                total += sample.value
    return int(total)


def traced_calls(trace_file: Path) -> int:
    """Spans of GetProduct calls in the instance's JSON-lines trace file."""
    if not trace_file.exists():
        return 0
    count = 0
    with trace_file.open(encoding="utf-8") as lines:
        for line in lines:
            if json.loads(line).get("name") == GET_PRODUCT:
                count += 1
    return count
