"""The aggregated discovery service (ADS), state of the world: one gRPC stream per
sidecar carries its clusters, endpoints, listeners and routes.

The server builds nothing itself: a `Build` function turns the current `MeshView` into
one type's resources for one node. Each stream keeps, per type URL, the names the node
subscribed to, the last response sent and the version the node last accepted;
`update()` wakes every stream, which rebuilds and pushes only the types that changed.

Protocol notes (xDS SotW, as Envoy 1.40 speaks it):
- Every request echoes the nonce of the last response Envoy processed for its type. A
  request with an older nonce is stale: a newer response is on its way, and Envoy's
  ACK or NACK of that one will carry its current names again.
- A request with `error_detail` is a NACK; `version_info` is then the version Envoy
  keeps. The rejected resources are not sent again; the next change of state is.
- A version is a digest of the resources, so an unchanged state is never pushed and a
  restarted control plane gives the same version for the same state.
- A push goes CDS before EDS and LDS before RDS, so Envoy never gets endpoints for a
  cluster it does not know yet (or routes a listener does not name).
- After a CDS push Envoy asks for EDS again with a request identical to its last ACK
  and keeps the clusters warming until it is answered (`init_fetch_timeout`, 15 s);
  after an LDS push it does the same for RDS. Such a request is answered once.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from mesh.envoy import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from mesh.envoy._model import MeshView, SidecarNode
from mesh.tasks import cancel_and_wait

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "AdsServer",
    "Build",
    "NodeStatus",
    "TypeStatus",
    "resources_version",
]

log = logging.getLogger("mesh.xds")


_WILDCARD_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})
"""Types a sidecar subscribes to as a whole; its names in the request mean nothing."""
_PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
_ASKED_AGAIN_AFTER = {CLUSTER_TYPE: ENDPOINT_TYPE, LISTENER_TYPE: ROUTE_TYPE}
"""After a push of the key type, Envoy re-requests the value type and waits for it."""
_MAX_DETAIL = 500
"""Characters of a NACK's message kept in logs and status (Envoy's can be long)."""

Build = Callable[[MeshView, SidecarNode, str, Sequence[str]], Sequence[Message]]
"""(view, node, type_url, names) -> the resources of that type the node gets. `names`
is empty for the wildcard types (clusters, listeners)."""


@dataclass(frozen=True)
class TypeStatus:
    """What one node holds of one resource type."""

    sent_version: str
    """Version of the last response sent."""
    acked_version: str | None
    """Version the node last accepted, None before its first ACK."""
    nack: str | None
    """Envoy's message for the last response it rejected, None once it accepts one."""


@dataclass(frozen=True)
class NodeStatus:
    """One connected sidecar and what it holds, by type URL."""

    node: SidecarNode
    types: Mapping[str, TypeStatus]


def resources_version(resources: Iterable[Message]) -> str:
    """The version of a set of resources: a digest of their content, in any order.

    Each resource is hashed as its deterministic serialisation (map entries in key
    order), so a restarted control plane gives the same versions for the same state.
    NOTE: that holds for messages inside an `Any` only if they were packed
    deterministically too (mesh.envoy packs them so); sorted-key JSON would not need
    it, but costs about a hundred times as much."""
    digest = hashlib.sha256()
    for encoded in sorted(resource.SerializeToString(deterministic=True) for resource in resources):
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()[:16]


def _packed(resource: Message) -> Any:
    packed = any_pb2.Any()
    packed.Pack(resource, deterministic=True)
    return packed


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


@dataclass
class _Subscription:
    """One type URL on one stream."""

    names: tuple[str, ...] = ()
    """What the node asks for now (empty for the wildcard types)."""
    sent_names: tuple[str, ...] | None = None
    """What the last response answered; None before the first one."""
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str | None = None
    nack: str | None = None
    answer_again: bool = False
    """Envoy will re-send its last request after a push of the type it depends on."""

    def status(self) -> TypeStatus:
        return TypeStatus(self.sent_version, self.acked_version, self.nack)


class _Session:
    """The protocol state of one stream, without I/O: requests and view changes in,
    responses out."""

    def __init__(
        self,
        node: SidecarNode,
        build: Build,
        on_ack: Callable[[str, str, str], None] | None,
        on_nack: Callable[[str, str, str], None] | None,
    ) -> None:
        self.node = node
        self._build = build
        self._on_ack = on_ack
        self._on_nack = on_nack
        self._subscriptions: dict[str, _Subscription] = {}
        # A stream-unique prefix: a nonce from an earlier stream never matches this one.
        self._nonce_prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def status(self) -> NodeStatus:
        types = {url: sub.status() for url, sub in self._subscriptions.items() if sub.sent_nonce}
        return NodeStatus(self.node, types)

    def on_request(self, request: Any, view: MeshView) -> list[Any]:
        sub = self._subscriptions.setdefault(request.type_url, _Subscription())
        sub.names = () if request.type_url in _WILDCARD_TYPES else tuple(request.resource_names)
        if sub.sent_names is None:
            return self._respond(view, request.type_url, sub)
        if request.response_nonce and request.response_nonce != sub.sent_nonce:
            return []  # stale; `names` is kept for when the newest response is answered
        names_changed = sub.names != sub.sent_names
        if request.HasField("error_detail"):
            self._rejected(request, sub)
            return self._respond(view, request.type_url, sub) if names_changed else []
        if request.response_nonce:
            self._accepted(request, sub)
        if names_changed or sub.answer_again:
            return self._respond(view, request.type_url, sub)
        return []

    def on_view_changed(self, view: MeshView) -> list[Any]:
        """Responses for every subscribed type whose resources changed, in push order."""
        ordered = [url for url in _PUSH_ORDER if url in self._subscriptions]
        ordered += sorted(set(self._subscriptions) - set(_PUSH_ORDER))
        responses: list[Any] = []
        for type_url in ordered:
            responses += self._respond(view, type_url, self._subscriptions[type_url], changed=True)
        return responses

    def _accepted(self, request: Any, sub: _Subscription) -> None:
        sub.acked_version, sub.nack = request.version_info, None
        log.debug(
            "%s accepted %s version %s", self.node.node_id, request.type_url, sub.acked_version
        )
        if self._on_ack is not None:
            self._on_ack(self.node.node_id, request.type_url, request.version_info)

    def _rejected(self, request: Any, sub: _Subscription) -> None:
        sub.nack = _bounded(request.error_detail.message)
        log.warning(
            "%s rejected %s version %s (keeps %s): %s",
            self.node.node_id,
            request.type_url,
            sub.sent_version,
            request.version_info or "none",
            sub.nack,
        )
        if self._on_nack is not None:
            self._on_nack(self.node.node_id, request.type_url, sub.nack)

    def _respond(
        self, view: MeshView, type_url: str, sub: _Subscription, *, changed: bool = False
    ) -> list[Any]:
        """A response with the current resources; with `changed`, only if they differ
        from the last one sent."""
        try:
            resources = self._build(view, self.node, type_url, sub.names)
        except Exception:  # a generator bug must not end every sidecar's stream
            log.exception("building %s for %s failed", type_url, self.node.node_id)
            return []
        version = resources_version(resources)
        if changed and version == sub.sent_version and sub.names == sub.sent_names:
            return []
        sub.sent_names, sub.sent_version = sub.names, version
        sub.sent_nonce = f"{self._nonce_prefix}-{next(self._counter)}"
        sub.answer_again = False
        if (dependent := self._subscriptions.get(_ASKED_AGAIN_AFTER.get(type_url, ""))) is not None:
            dependent.answer_again = True
        return [
            discovery_pb2.DiscoveryResponse(
                version_info=version,
                resources=[_packed(resource) for resource in resources],
                type_url=type_url,
                nonce=sub.sent_nonce,
            )
        ]


class _ViewChanged:
    """Inbox marker: the mesh changed since the stream last rebuilt."""


class _Closed:
    """Inbox marker: the client's side of the stream has ended."""


_Event = Any
"""A DiscoveryRequest, `_ViewChanged` or `_Closed` (requests are untyped: xds-protos)."""


class _Stream:
    """The inbox of one open stream: its requests and the news of view changes, in
    order. Changes coalesce: one rebuild covers every update since the last."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[_Event] = asyncio.Queue()
        self.session: _Session | None = None
        self._change_queued = False

    def view_changed(self) -> None:
        if not self._change_queued:
            self._change_queued = True
            self.inbox.put_nowait(_ViewChanged())

    async def next_event(self) -> _Event:
        event = await self.inbox.get()
        if isinstance(event, _ViewChanged):
            self._change_queued = False
        return event

    async def read(self, requests: AsyncIterator[Any]) -> None:
        """Move the client's requests into the inbox until it stops sending."""
        try:
            async for request in requests:
                self.inbox.put_nowait(request)
        except Exception as error:  # the client went away: end the stream, quietly
            log.debug("ADS stream read ended: %r", error)
        finally:
            self.inbox.put_nowait(_Closed())


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """The ADS servicer (state of the world): streams each sidecar the resources `build`
    makes of the current view, and pushes what changes on `update()`.

    Args:
        build: the resources of one type for one node; called on the event loop, so it
            should be quick and pure.
        view: the mesh at start.
        on_nack: called with (node id, type URL, Envoy's message) when a sidecar
            rejects a response.
        on_ack: called with (node id, type URL, version) when a sidecar accepts one.
        admit: says why a node may not have its config (None: it may), from the node
            and the stream's context (its TLS peer); a refused stream ends with
            PERMISSION_DENIED.
    """

    def __init__(
        self,
        build: Build,
        view: MeshView,
        *,
        on_nack: Callable[[str, str, str], None] | None = None,
        on_ack: Callable[[str, str, str], None] | None = None,
        admit: Callable[[SidecarNode, grpc.aio.ServicerContext[Any, Any]], str | None]
        | None = None,
    ) -> None:
        self._build = build
        self._admit = admit
        self._view = view
        self._on_nack = on_nack
        self._on_ack = on_ack
        self._streams: set[_Stream] = set()
        self._by_node: dict[str, _Stream] = {}

    @property
    def view(self) -> MeshView:
        return self._view

    def update(self, view: MeshView) -> None:
        """Make `view` the mesh state. Returns at once: every open stream then rebuilds
        and pushes what changed."""
        self._view = view
        for stream in self._streams:
            stream.view_changed()

    @property
    def nodes(self) -> Mapping[str, NodeStatus]:
        """Each connected sidecar by node id (the latest stream if one has several)."""
        return {
            node_id: stream.session.status()
            for node_id, stream in self._by_node.items()
            if stream.session is not None
        }

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        stream = _Stream()
        reader = asyncio.create_task(stream.read(request_iterator), name="ads-read")
        self._streams.add(stream)
        try:
            first = await self._first_request(stream)
            if first is None:
                return
            session = await self._open_session(stream, first, context)
            for response in session.on_request(first, self._view):
                yield response
            while not isinstance(event := await stream.next_event(), _Closed):
                for response in self._handle(session, event):
                    yield response
        finally:
            self._close(stream)
            await cancel_and_wait(reader)

    async def _first_request(self, stream: _Stream) -> Any | None:
        """The first request (view changes before it change nothing yet), or None if
        the client ends the stream without one."""
        while isinstance(event := await stream.next_event(), _ViewChanged):
            pass
        return None if isinstance(event, _Closed) else event

    async def _open_session(
        self, stream: _Stream, first: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> _Session:
        try:
            node = SidecarNode.from_node(
                first.node.id, json_format.MessageToDict(first.node.metadata)
            )
        except ValueError as error:
            log.warning("ADS stream refused: %s", error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bounded(str(error)))
        refusal = self._admit(node, context) if self._admit else None
        if refusal is not None:
            log.warning("ADS stream of %s refused: %s", _bounded(node.node_id), refusal)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _bounded(refusal))
        stream.session = _Session(node, self._build, self._on_ack, self._on_nack)
        self._by_node[node.node_id] = stream
        log.info("%s connected (%s %s)", node.node_id, node.service, node.version)
        return stream.session

    def _handle(self, session: _Session, event: _Event) -> list[Any]:
        if isinstance(event, _ViewChanged):
            return session.on_view_changed(self._view)
        return session.on_request(event, self._view)

    def _close(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if stream.session is None:
            return
        node_id = stream.session.node.node_id
        if self._by_node.get(node_id) is stream:
            del self._by_node[node_id]
        log.info("%s disconnected", node_id)
