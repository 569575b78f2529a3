"""mesh.events without a broker: the Event and its wire form, topic and consumer names,
the `events:` section of mesh.yaml, where the bus finds its broker, and the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mesh.config import BROKERS, EventsSettings, mesh_schema, parse_config
from mesh.errors import BrokerUnavailable, ConfigError
from mesh.events import Event, event_bus
from mesh.events._codec import decode_event, encode_event
from mesh.events._model import check_consumer, check_topic
from mesh.state import MeshState, events_endpoint, read_state, write_state

PLACED = Event(
    id="3f0c9a1e",
    stream="order-ord-123",
    type="shop.order.v1.OrderPlaced",
    data=b"\x0a\x07ord-123\x00\xff",
    occurred_at=1767225600.123456,
    version=1,
)


def minimal(**sections: Any) -> dict[str, Any]:
    return {"services": {"shop": {}}, **sections}


# -- the event and its wire form -------------------------------------------------------


def test_an_event_travels_as_headers_and_its_bytes_unchanged() -> None:
    headers, payload = encode_event(PLACED)

    assert payload == PLACED.data
    assert headers["Nats-Msg-Id"] == PLACED.id  # what JetStream dedupes on
    assert decode_event(headers, payload) == PLACED


@pytest.mark.parametrize(
    "change",
    [
        {"id": ""},
        {"id": "has\r\nnewline"},
        {"stream": " padded"},
        {"type": "shop.order.v1.Order Placed\n"},
        {"version": 0},
        {"version": True},
        {"version": 1.0},
        {"occurred_at": "today"},
        {"data": "not bytes"},
    ],
)
def test_an_event_refuses_fields_that_cannot_travel(change: dict[str, Any]) -> None:
    fields = {**PLACED.__dict__, **change}
    with pytest.raises(ValueError, match=r"Event\.\w+"):
        Event(**fields)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Nats-Msg-Id": "x"},
        {**encode_event(PLACED)[0], "Shop-Event-Version": "first"},
        {**encode_event(PLACED)[0], "Shop-Event-Occurred-At": "nan"},
        {**encode_event(PLACED)[0], "Shop-Event-Version": "0"},
    ],
)
def test_a_message_that_is_no_event_does_not_decode(headers: dict[str, str] | None) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case fails its own way
        decode_event(headers, b"")


@pytest.mark.parametrize("topic", ["orders", "order.placed", "a-b.c-1.d"])
def test_topics_are_dotted_lowercase_tokens(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize("topic", ["", "Orders", "order.", ".order", "order.*", "a.>", "a b"])
def test_other_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="a topic is"):
        check_topic(topic)


@pytest.mark.parametrize("consumer", ["billing", "order-history", "v2"])
def test_consumers_are_lowercase_names(consumer: str) -> None:
    assert check_consumer(consumer) == consumer


@pytest.mark.parametrize("consumer", ["", "Billing", "billing.v2", "bill_ing", "x*"])
def test_other_consumers_are_refused(consumer: str) -> None:
    with pytest.raises(ValueError, match="a consumer is"):
        check_consumer(consumer)


# -- mesh.yaml's events: section --------------------------------------------------------


def test_the_events_section_defaults_to_an_embedded_nats(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path / "mesh.yaml")

    assert config.events == EventsSettings(broker="nats", endpoint="", port=4222)
    assert parse_config(minimal(events=None), tmp_path / "mesh.yaml").events == config.events
    assert BROKERS == ("nats", "rabbitmq")


def test_the_events_section_takes_its_settings(tmp_path: Path) -> None:
    document = minimal(events={"broker": "nats", "endpoint": "10.0.0.9:4222", "port": 0})

    config = parse_config(document, tmp_path / "mesh.yaml")

    assert config.events == EventsSettings("nats", "10.0.0.9:4222", 0)


@pytest.mark.parametrize(
    ("events", "key", "problem"),
    [
        ({"broker": "kafka"}, "events.broker", "must be 'nats' or 'rabbitmq', got 'kafka'"),
        ({"port": 70000}, "events.port", "must be at most 65535"),
        ({"port": "4222"}, "events.port", "must be an integer"),
        ({"endpoint": 4222}, "events.endpoint", "must be a string"),
        ({"stream": "SHOP"}, "events.stream", "unknown setting"),
    ],
)
def test_a_bad_events_setting_names_its_key(
    events: dict[str, Any], key: str, problem: str, tmp_path: Path
) -> None:
    document = minimal(events=events)
    with pytest.raises(ConfigError) as caught:
        parse_config(document, tmp_path / "mesh.yaml")

    assert caught.value.key == key
    assert caught.value.problem.startswith(problem)
    assert not jsonschema.Draft202012Validator(mesh_schema()).is_valid(document)


def test_the_schema_documents_the_events_section() -> None:
    schema = mesh_schema()
    events = schema["$defs"]["EventsSettings"]

    assert schema["properties"]["events"]["$ref"] == "#/$defs/EventsSettings"
    assert events["additionalProperties"] is False
    assert events["properties"]["broker"]["enum"] == ["nats", "rabbitmq"]
    assert "does not embed" in events["properties"]["broker"]["description"]
    assert events["properties"]["port"]["default"] == 4222


# -- where a bus finds its broker --------------------------------------------------------


def test_the_broker_is_mesh_yamls_else_the_one_meshctl_up_runs_here(tmp_path: Path) -> None:
    named = parse_config(minimal(events={"endpoint": "nats.example:4222"}), tmp_path / "a.yaml")
    here = parse_config(minimal(), tmp_path / "b.yaml")

    assert events_endpoint(named) == "nats.example:4222"
    assert events_endpoint(here) is None
    write_state(here.state_dir, MeshState(7, "127.0.0.1:2379", 8))  # an older meshctl's
    assert events_endpoint(here) is None
    running = MeshState(
        7, "127.0.0.1:2379", 8, events_endpoint="127.0.0.1:4222", events_pid=9,
        events_state="RUNNING", events_restarts=2,
    )  # fmt: skip
    write_state(here.state_dir, running)
    assert events_endpoint(here) == "127.0.0.1:4222"
    assert events_endpoint(named) == "nats.example:4222"  # mesh.yaml first
    assert read_state(here.state_dir) == running


async def test_the_factory_needs_an_endpoint_for_rabbitmq(tmp_path: Path) -> None:
    config = parse_config(minimal(events={"broker": "rabbitmq"}), tmp_path / "m.yaml")
    write_state(  # an embedded broker that meshctl up runs is NATS: never used for rabbitmq
        config.state_dir,
        MeshState(7, "127.0.0.1:2379", 8, events_endpoint="127.0.0.1:4222", events_pid=9),
    )
    with pytest.raises(ConfigError) as caught:
        await event_bus(config)

    assert caught.value.key == "events.endpoint"
    assert "meshctl up embeds only NATS" in caught.value.problem


async def test_the_factory_without_a_known_broker_says_how_to_get_one(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path / "mesh.yaml")  # no endpoint, nothing running

    with pytest.raises(BrokerUnavailable, match="meshctl up"):
        await event_bus(config)
