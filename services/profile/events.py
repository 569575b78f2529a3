"""The user service's events (shop/user/v1/events.proto, topic "user") read as the
changes they make to a profile.

The user service publishes its events upcast, so a UserRegistered is of schema 2
(`display_name`). The payloads are still read defensively, since they come from
another service: a payload that does not parse, an unknown type, a registration whose
user id is not its stream's, or a missing name is a ValueError (the projection logs
and skips it) rather than a wrong profile.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from shop.user.v1 import events_pb2

from mesh.events import Event
from services.profile.domain import (
    Change,
    Deactivated,
    Registered,
    Renamed,
    Touched,
    user_of_stream,
)

__all__ = ["TOPIC", "change_of"]

TOPIC = "user"
"""The topic the user service publishes on."""

M = TypeVar("M", bound=Message)

_REGISTERED = events_pb2.UserRegistered.DESCRIPTOR.full_name
_EMAIL_CHANGED = events_pb2.EmailChanged.DESCRIPTOR.full_name
_RENAMED = events_pb2.DisplayNameChanged.DESCRIPTOR.full_name
_DEACTIVATED = events_pb2.UserDeactivated.DESCRIPTOR.full_name


def change_of(event: Event) -> Change:
    """The change `event` makes to its user's profile.

    Raises:
        ValueError: the event is not one the user service could have published.
    """
    user_id = user_of_stream(event.stream)
    if event.type == _REGISTERED:
        registered = _parse(events_pb2.UserRegistered, event)
        if registered.user_id != user_id:
            raise ValueError(f"a registration of another user than its stream's: {user_id}")
        if not registered.username:
            raise ValueError(f"the registration of {user_id} has no username")
        # NOTE: a schema-1 payload (its `name` is field 4, reserved in schema 2) parses
        # without a display name; the user service shows such a user by username.
        display_name = registered.display_name or registered.username
        return Registered(user_id, registered.username, display_name)
    if event.type == _RENAMED:
        renamed = _parse(events_pb2.DisplayNameChanged, event)
        if not renamed.display_name:
            raise ValueError(f"a display name change of {user_id} without a name")
        return Renamed(renamed.display_name)
    if event.type == _DEACTIVATED:
        _parse(events_pb2.UserDeactivated, event)
        return Deactivated()
    if event.type == _EMAIL_CHANGED:
        _parse(events_pb2.EmailChanged, event)
        return Touched()
    raise ValueError(f"not a user event type: {event.type[:80]!r}")


def _parse(cls: type[M], event: Event) -> M:
    try:
        return cls.FromString(event.data)
    except DecodeError as error:  # also a string that is not UTF-8
        raise ValueError(f"{event.type} payload does not parse: {error}") from error
