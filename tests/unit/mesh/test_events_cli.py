"""`meshctl events`' decoding and layout, without a broker: payloads as proto3 JSON from
the generated descriptor set (in a pool of its own), unknown types by their size."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from shop.user.v1 import events_pb2

from mesh.events import Event
from mesh.supervisor import EventDecoder, default_descriptor_set, events_text, show_events

REGISTERED = events_pb2.UserRegistered(
    user_id="usr-0123456789abcdef", username="ann", email="ann@example.com", display_name="Ann"
)


def event(type_name: str, data: bytes, version: int = 1) -> Event:
    return Event(f"ev-{version}", "user-usr-0123456789abcdef", type_name, data, 1.7e9, version)


def test_the_generated_descriptor_set_is_found_beside_the_generated_package() -> None:
    path = default_descriptor_set()

    assert path is not None
    assert path.name == "shop.binpb"


def test_a_known_type_decodes_to_proto3_json() -> None:
    decoder = EventDecoder(default_descriptor_set())

    payload, problem = decoder.decode(
        event("shop.user.v1.UserRegistered", REGISTERED.SerializeToString())
    )

    assert problem == ""
    assert payload == {
        "userId": "usr-0123456789abcdef",
        "username": "ann",
        "email": "ann@example.com",
        "displayName": "Ann",
    }


def test_an_unknown_type_or_bad_bytes_are_shown_by_their_size() -> None:
    decoder = EventDecoder(default_descriptor_set())
    unknown = event("shop.nothing.v1.Nothing", b"\x01\x02\x03", version=1)
    garbled = event("shop.user.v1.UserRegistered", b"\xff\xff\xff", version=2)

    shown = show_events([unknown, garbled], decoder)

    assert [s.payload for s in shown] == [None, None]
    assert shown[0].to_json()["problem"] == "unknown type"
    assert shown[0].to_json()["size"] == 3
    assert "(unknown type, 3 bytes)" in events_text(shown)
    assert "(does not decode as shop.user.v1.UserRegistered, 3 bytes)" in events_text(shown)


def test_files_load_after_their_imports_whatever_the_order_of_the_set(tmp_path: Path) -> None:
    generated = default_descriptor_set()
    assert generated is not None
    source = descriptor_pb2.FileDescriptorSet.FromString(generated.read_bytes())
    reversed_set = descriptor_pb2.FileDescriptorSet(file=list(reversed(source.file)))
    path = tmp_path / "reversed.binpb"
    path.write_bytes(reversed_set.SerializeToString())

    payload, _ = EventDecoder(path).decode(
        event("shop.user.v1.UserRegistered", REGISTERED.SerializeToString())
    )

    assert payload is not None


def test_without_a_descriptor_set_every_type_is_unknown() -> None:
    payload, problem = EventDecoder(None).decode(
        event("shop.user.v1.UserRegistered", REGISTERED.SerializeToString())
    )

    assert (payload, problem) == (None, "unknown type")


def test_the_text_has_a_header_and_one_line_per_event_oldest_first() -> None:
    decoder = EventDecoder(default_descriptor_set())
    changed = events_pb2.EmailChanged(email="new@example.com").SerializeToString()
    events = [
        event("shop.user.v1.UserRegistered", REGISTERED.SerializeToString(), 1),
        event("shop.user.v1.EmailChanged", changed, 2),
    ]

    lines = events_text(show_events(events, decoder)).splitlines()

    assert lines[0].split() == ["VERSION", "TIME", "TYPE", "ID", "PAYLOAD"]
    assert lines[1].split()[:4] == [
        "1",
        "2023-11-14T22:13:20.000Z",
        "shop.user.v1.UserRegistered",
        "ev-1",
    ]
    assert lines[2].endswith('{"email": "new@example.com"}')
