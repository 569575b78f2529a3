"""The ADS stream's protocol, driven like Envoy would, over an in-process grpc.aio server
and a raw ADS stub: ACK, NACK, stale nonces, push order and the re-request Envoy sends
after a CDS push. The resources are a fixed table the tests edit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from mesh.envoy._common import typed
from mesh.envoy._model import MeshView, SidecarNode
from mesh.xds import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    AdsServer,
    resources_version,
)

NODE = SidecarNode(
    node_id="echo-v1-0",
    service="echo",
    version="v1",
    inbound_host="127.0.0.1",
    inbound_port=7000,
    app_socket="/run/app.sock",
    outbound_socket="/run/out.sock",
    cert_chain="/certs/echo.pem",
    private_key="/certs/echo.key",
    ca="/certs/ca.pem",
)
VIEW = MeshView("shop.local", "default", {})
QUIET = 0.1
"""Seconds of silence that show the server sends nothing more."""


class Table:
    """The Build: resources by type URL and name, edited by the tests."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Message]] = {
            CLUSTER_TYPE: {"a": cluster_pb2.Cluster(name="a")},
            ENDPOINT_TYPE: {"a": assignment("a", 1), "b": assignment("b", 1)},
            LISTENER_TYPE: {"out": listener_pb2.Listener(name="out")},
            ROUTE_TYPE: {"routes": route_pb2.RouteConfiguration(name="routes")},
        }

    def __call__(
        self, view: MeshView, node: SidecarNode, type_url: str, names: Sequence[str]
    ) -> Sequence[Message]:
        table = self.resources.get(type_url, {})
        return [table[name] for name in (names or sorted(table)) if name in table]


def assignment(name: str, weight: int) -> Message:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        policy=endpoint_pb2.ClusterLoadAssignment.Policy(overprovisioning_factor={"value": weight}),
    )


def node_message(node: SidecarNode) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update(node.metadata())
    return base_pb2.Node(id=node.node_id, cluster=node.service, metadata=metadata)


class FakeEnvoy:
    """One ADS stream, as Envoy drives it; responses are piped into a queue, so waiting
    for one with a timeout never cancels the call."""

    def __init__(self, stub: Any, ads: AdsServer) -> None:
        self.call = stub.StreamAggregatedResources()
        self._ads = ads
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self._first = True

    async def _read(self) -> None:
        async for response in self.call:
            self.responses.put_nowait(response)

    async def ask(
        self,
        type_url: str,
        names: Sequence[str] = (),
        *,
        answering: Any = None,
        error: str | None = None,
        nonce: str | None = None,
    ) -> None:
        """A request for `type_url`; `answering` is the response it ACKs (or NACKs,
        with `error`): its nonce and, for an ACK, its version."""
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
        if self._first:
            request.node.CopyFrom(node_message(NODE))
            self._first = False
        if answering is not None:
            request.response_nonce = answering.nonce
            request.version_info = "" if error else answering.version_info
        if nonce is not None:
            request.response_nonce = nonce
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(request)

    async def response(self) -> Any:
        return await asyncio.wait_for(self.responses.get(), timeout=2.0)

    async def nothing_more(self) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.responses.get(), timeout=QUIET)

    async def subscribe(self, type_url: str, names: Sequence[str] = ()) -> Any:
        """Ask, take the response, ACK it, and wait until the server has the ACK (a
        change pushed before that would make the ACK stale); returns the response."""
        await self.ask(type_url, names)
        response = await self.response()
        await self.ask(type_url, names, answering=response)
        for _ in range(200):
            status = self._ads.nodes[NODE.node_id].types[type_url]
            if status.acked_version == response.version_info:
                return response
            await asyncio.sleep(0.005)
        pytest.fail(f"{type_url} not acknowledged")

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


KINDS = {
    CLUSTER_TYPE: (cluster_pb2.Cluster, "name"),
    ENDPOINT_TYPE: (endpoint_pb2.ClusterLoadAssignment, "cluster_name"),
}


def names_in(response: Any) -> list[str]:
    kind, name_field = KINDS[response.type_url]
    names = []
    for packed in response.resources:
        resource = kind()
        packed.Unpack(resource)
        names.append(getattr(resource, name_field))
    return names


class Harness:
    def __init__(self) -> None:
        self.table = Table()
        self.acks: list[tuple[str, str, str]] = []
        self.nacks: list[tuple[str, str, str]] = []
        self.ads = AdsServer(
            self.table,
            VIEW,
            on_ack=lambda *ack: self.acks.append(ack),
            on_nack=lambda *nack: self.nacks.append(nack),
        )

    def change(self, type_url: str, resource: Message, name: str) -> None:
        self.table.resources[type_url][name] = resource
        self.ads.update(VIEW)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
async def stub(harness: Harness) -> AsyncIterator[Any]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(harness.ads, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
async def envoy(stub: Any, harness: Harness) -> AsyncIterator[FakeEnvoy]:
    client = FakeEnvoy(stub, harness.ads)
    try:
        yield client
    finally:
        await client.close()


async def test_a_node_without_metadata_is_refused(stub: Any) -> None:
    call = stub.StreamAggregatedResources()
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    request.node.id = "anonymous"
    await call.write(request)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_first_request_is_answered_with_the_content_version(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    await envoy.ask(CLUSTER_TYPE)

    response = await envoy.response()

    assert names_in(response) == ["a"]
    assert response.version_info == resources_version([cluster_pb2.Cluster(name="a")])
    assert response.nonce


async def test_an_ack_is_reported_and_not_answered(envoy: FakeEnvoy, harness: Harness) -> None:
    response = await envoy.subscribe(CLUSTER_TYPE)

    await envoy.nothing_more()
    assert harness.acks == [(NODE.node_id, CLUSTER_TYPE, response.version_info)]
    status = harness.ads.nodes[NODE.node_id].types[CLUSTER_TYPE]
    assert status.acked_version == status.sent_version == response.version_info


async def test_an_update_that_changes_nothing_pushes_nothing(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    await envoy.subscribe(CLUSTER_TYPE)
    await envoy.subscribe(ENDPOINT_TYPE, ["a"])

    harness.change(ENDPOINT_TYPE, assignment("b", 2), "b")  # nobody asked for b

    await envoy.nothing_more()


async def test_an_update_pushes_clusters_before_endpoints_and_listeners_before_routes(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    for type_url, names in [
        (ROUTE_TYPE, ["routes"]),
        (LISTENER_TYPE, []),
        (ENDPOINT_TYPE, ["a"]),
        (CLUSTER_TYPE, []),
    ]:
        await envoy.subscribe(type_url, names)
    harness.table.resources[CLUSTER_TYPE]["a"] = cluster_pb2.Cluster(name="a", alt_stat_name="x")
    harness.table.resources[ENDPOINT_TYPE]["a"] = assignment("a", 2)
    harness.table.resources[LISTENER_TYPE]["out"] = listener_pb2.Listener(
        name="out", stat_prefix="x"
    )
    harness.table.resources[ROUTE_TYPE]["routes"] = route_pb2.RouteConfiguration(
        name="routes", max_direct_response_body_size_bytes={"value": 10}
    )

    harness.ads.update(VIEW)

    pushed = [(await envoy.response()).type_url for _ in range(4)]
    assert pushed == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]


async def test_a_stale_request_is_ignored_but_its_names_are_kept(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    first = await envoy.subscribe(ENDPOINT_TYPE, ["a"])
    harness.change(ENDPOINT_TYPE, assignment("a", 2), "a")
    pushed = await envoy.response()

    # Sent before Envoy saw `pushed`: its nonce is the older one.
    await envoy.ask(ENDPOINT_TYPE, ["a", "b"], answering=first)
    await envoy.nothing_more()
    await envoy.ask(ENDPOINT_TYPE, ["a", "b"], answering=pushed)

    assert names_in(await envoy.response()) == ["a", "b"]


async def test_a_nack_is_reported_and_not_answered_with_the_same(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    accepted = await envoy.subscribe(CLUSTER_TYPE)
    harness.change(CLUSTER_TYPE, cluster_pb2.Cluster(name="a", alt_stat_name="bad"), "a")
    rejected = await envoy.response()

    await envoy.ask(CLUSTER_TYPE, answering=rejected, error="bad cluster a")

    await envoy.nothing_more()
    assert harness.nacks == [(NODE.node_id, CLUSTER_TYPE, "bad cluster a")]
    status = harness.ads.nodes[NODE.node_id].types[CLUSTER_TYPE]
    assert (status.acked_version, status.nack) == (accepted.version_info, "bad cluster a")

    harness.change(CLUSTER_TYPE, cluster_pb2.Cluster(name="a", alt_stat_name="good"), "a")
    fixed = await envoy.response()
    await envoy.ask(CLUSTER_TYPE, answering=fixed)
    await envoy.nothing_more()
    status = harness.ads.nodes[NODE.node_id].types[CLUSTER_TYPE]
    assert (status.acked_version, status.nack) == (fixed.version_info, None)


async def test_the_endpoints_request_after_a_cluster_push_is_answered_once(
    envoy: FakeEnvoy, harness: Harness
) -> None:
    await envoy.subscribe(CLUSTER_TYPE)
    endpoints = await envoy.subscribe(ENDPOINT_TYPE, ["a"])
    harness.change(CLUSTER_TYPE, cluster_pb2.Cluster(name="a", alt_stat_name="x"), "a")
    await envoy.response()

    # Envoy re-sends the request that ACKed the endpoints, unchanged.
    await envoy.ask(ENDPOINT_TYPE, ["a"], answering=endpoints)
    again = await envoy.response()
    assert (again.type_url, again.version_info) == (ENDPOINT_TYPE, endpoints.version_info)
    assert again.nonce != endpoints.nonce

    await envoy.ask(ENDPOINT_TYPE, ["a"], answering=again)
    await envoy.nothing_more()


async def test_a_closed_stream_leaves_the_nodes(envoy: FakeEnvoy, harness: Harness) -> None:
    await envoy.subscribe(CLUSTER_TYPE)
    assert list(harness.ads.nodes) == [NODE.node_id]

    await envoy.close()

    for _ in range(200):
        if not harness.ads.nodes:
            break
        await asyncio.sleep(0.01)
    assert harness.ads.nodes == {}


def test_the_version_does_not_depend_on_map_order() -> None:
    """Maps, also inside an `Any` packed as mesh.envoy packs typed configs."""

    def cluster(keys: Sequence[str]) -> Message:
        metadata = struct_pb2.Struct()
        for key in keys:
            metadata.fields[key].string_value = key
        return cluster_pb2.Cluster(
            name="a", typed_extension_protocol_options={"x": typed(metadata)}
        )

    keys = [f"key{i}" for i in range(20)]

    assert resources_version([cluster(keys)]) == resources_version([cluster(keys[::-1])])
    assert resources_version([cluster(keys)]) != resources_version([cluster(keys[1:])])
