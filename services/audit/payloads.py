"""Event payloads as proto3 JSON, for people reading the audit log.

The messages an event's `type` may name are those of the services' events.proto files,
found through their generated descriptors (message_factory), so a new event message
is known as soon as its module is imported here. A type outside them, or a payload
that does not parse as its type, has no JSON: the log keeps its bytes all the same.
"""

from __future__ import annotations

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError, Message
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.product.v1 import events_pb2 as product_events
from shop.user.v1 import events_pb2 as user_events

__all__ = ["EVENT_TYPES", "payload_json"]

_EVENT_FILES: tuple[FileDescriptor, ...] = tuple(
    module.DESCRIPTOR
    for module in (user_events, product_events, inventory_events, order_events, payment_events)
)

EVENT_TYPES: dict[str, type[Message]] = {
    message.full_name: message_factory.GetMessageClass(message)
    for file in _EVENT_FILES
    for message in file.message_types_by_name.values()
}
"""The message class of each known event type, by its full name."""


def payload_json(event_type: str, data: bytes) -> str:
    """`data` as the proto3 JSON of `event_type` (every field shown, keys sorted, on one
    line); "" if the type is not a known event message or `data` does not parse."""
    message_class = EVENT_TYPES.get(event_type)
    if message_class is None:
        return ""
    message = message_class()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return ""
    return json_format.MessageToJson(
        message, indent=None, sort_keys=True, always_print_fields_with_no_presence=True
    )
