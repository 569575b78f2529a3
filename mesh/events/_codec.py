"""An Event as a JetStream message and back: the payload is `data` as it is (the
serialized protobuf), every other field a header. `Nats-Msg-Id` carries the id, so the
stream's dedupe window drops a republished event."""

from __future__ import annotations

import math
from collections.abc import Mapping

from mesh.events._model import Event

__all__ = ["decode_event", "encode_event"]

MSG_ID = "Nats-Msg-Id"
STREAM = "Shop-Event-Stream"
TYPE = "Shop-Event-Type"
VERSION = "Shop-Event-Version"
OCCURRED_AT = "Shop-Event-Occurred-At"


def encode_event(event: Event) -> tuple[dict[str, str], bytes]:
    """The headers and payload that carry `event`."""
    headers = {
        MSG_ID: event.id,
        STREAM: event.stream,
        TYPE: event.type,
        VERSION: str(event.version),
        OCCURRED_AT: repr(float(event.occurred_at)),  # repr: read back exactly
    }
    return headers, event.data


def decode_event(headers: Mapping[str, str] | None, payload: bytes) -> Event:
    """The Event that `headers` and `payload` carry.

    Raises:
        ValueError: a header is missing or does not parse (a message that something
            other than an EventBus published).
    """
    fields = headers or {}
    missing = [name for name in (MSG_ID, STREAM, TYPE, VERSION, OCCURRED_AT) if name not in fields]
    if missing:
        raise ValueError(f"no {', '.join(missing)} header")
    occurred_at = float(fields[OCCURRED_AT])
    if not math.isfinite(occurred_at):
        raise ValueError(f"{OCCURRED_AT} is not a time: {fields[OCCURRED_AT]!r:.48}")
    return Event(
        id=fields[MSG_ID],
        stream=fields[STREAM],
        type=fields[TYPE],
        data=bytes(payload),
        occurred_at=occurred_at,
        version=int(fields[VERSION]),
    )
