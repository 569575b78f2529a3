"""`meshctl events <stream>`: one stream's events as the broker stores them, oldest
first, each payload decoded to proto3 JSON.

The broker is the one services use (mesh.events.event_bus: mesh.yaml's events.endpoint,
else the one `meshctl up` runs here). Payloads are decoded with the descriptor set the
code generator writes (generated/shop.binpb), loaded into a pool of its own, so that
meshctl imports no service's generated code; a type the set does not hold is shown by
its size. Reading every topic's history to pick one stream is a full scan of the log:
`--topic` narrows it to the topic the stream's events go to.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError

from mesh.codegen import DESCRIPTOR_SET
from mesh.config import MeshConfig
from mesh.events import Event, event_bus

__all__ = [
    "EventDecoder",
    "ShownEvent",
    "default_descriptor_set",
    "events_text",
    "show_events",
    "stream_events",
]


def default_descriptor_set() -> Path | None:
    """generated/shop.binpb, beside the generated `shop` package (found, not imported);
    None if there is no such package or file."""
    spec = importlib.util.find_spec("shop")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).parent / DESCRIPTOR_SET
        if path.is_file():
            return path
    return None


class EventDecoder:
    """Payloads by their type's full name, from the messages of a descriptor set."""

    def __init__(self, descriptor_set: Path | None) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        files = descriptor_pb2.FileDescriptorSet()
        if descriptor_set is not None:
            files.ParseFromString(descriptor_set.read_bytes())
        by_name = {file.name: file for file in files.file}
        added: set[str] = set()
        for name in by_name:
            self._add(name, by_name, added)

    def _add(
        self, name: str, files: dict[str, descriptor_pb2.FileDescriptorProto], added: set[str]
    ) -> None:
        """Add `name` after its imports: a pool builds each file as it is added."""
        if name in added or name not in files:
            return
        added.add(name)
        for dependency in files[name].dependency:
            self._add(dependency, files, added)
        self._pool.Add(files[name])

    def decode(self, event: Event) -> tuple[dict[str, Any] | None, str]:
        """The payload as proto3 JSON, or None and why not."""
        try:
            descriptor = self._pool.FindMessageTypeByName(event.type)
        except KeyError:
            return None, "unknown type"
        message = message_factory.GetMessageClass(descriptor)()
        try:
            message.ParseFromString(event.data)
        except DecodeError:
            return None, f"does not decode as {event.type}"
        return json_format.MessageToDict(message, descriptor_pool=self._pool), ""


def _utc(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ShownEvent:
    """One event as `meshctl events` shows it."""

    event: Event
    payload: dict[str, Any] | None  # proto3 JSON; None: see `problem`
    problem: str = ""  # why the payload is not shown ("unknown type", ...)

    def to_json(self) -> dict[str, object]:
        event = self.event
        return {
            "version": event.version,
            "time": _utc(event.occurred_at),
            "occurred_at": event.occurred_at,
            "type": event.type,
            "id": event.id,
            "stream": event.stream,
            "size": len(event.data),
            "payload": self.payload,
            **({"problem": self.problem} if self.problem else {}),
        }

    def cells(self) -> tuple[str, str, str, str, str]:
        event = self.event
        if self.payload is None:
            payload = f"({self.problem}, {len(event.data)} bytes)"
        else:
            payload = json.dumps(self.payload, ensure_ascii=False)
        return (str(event.version), _utc(event.occurred_at), event.type, event.id, payload)


async def stream_events(
    config: MeshConfig, stream: str, *, topic: str | None = None, limit: int | None = None
) -> list[Event]:
    """`stream`'s events in the order the broker stored them (of `topic` only, if
    given): the last `limit` of them, if given.

    Raises:
        BrokerUnavailable: no broker is known, or it does not answer.
        ValueError: `topic` is not a topic name.
    """
    bus = await event_bus(config)
    try:
        history = await bus.history(topic)
    finally:
        await bus.aclose()
    found = [event for event in history if event.stream == stream]
    return found[-limit:] if limit else found


def show_events(events: Iterable[Event], decoder: EventDecoder) -> list[ShownEvent]:
    return [ShownEvent(event, *decoder.decode(event)) for event in events]


def events_text(shown: Sequence[ShownEvent]) -> str:
    """One line per event under a header; the payload, last, is not padded."""
    rows = [("VERSION", "TIME", "TYPE", "ID", "PAYLOAD"), *(s.cells() for s in shown)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4]])
        for row in rows
    )
