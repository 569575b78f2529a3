"""`meshctl events <stream>` on the run's real NATS broker: a stream's events, oldest
first, with proto3 JSON payloads (text and --json), none of another stream's, an
unknown type by its size, --limit; exit 1 for a stream without events and for a broker
that does not answer, exit 2 for a bad topic."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import uuid
from pathlib import Path

import pytest
import yaml
from shop.user.v1 import events_pb2

from mesh.cli import main as meshctl
from mesh.events import Event, NatsEventBus
from mesh.supervisor import NatsServer, free_port

pytestmark = pytest.mark.integration


def write_mesh_yaml(root: Path, broker: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mesh.yaml"
    document = {
        "mesh": {"state_dir": str(root / ".mesh")},
        "events": {"broker": "nats", "endpoint": broker},
        "services": {"user": {}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def run_meshctl(path: Path, *args: str) -> tuple[int, str, str]:
    """`meshctl --config path args...` in a thread (it runs its own event loop)."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = meshctl(["--config", str(path), *args])
        return code, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(run)


class Published:
    """One user's stream of events, and an event of another stream, on topic "user"."""

    def __init__(self) -> None:
        self.user_id = f"usr-{uuid.uuid4().hex[:16]}"
        self.stream = f"user-{self.user_id}"
        registered = events_pb2.UserRegistered(
            user_id=self.user_id, username="ann", email="ann@example.com", display_name="Ann"
        )
        changed = events_pb2.EmailChanged(email="ann@example.org")
        now = time.time()
        self.events = [
            self.event(1, registered.DESCRIPTOR.full_name, registered.SerializeToString(), now),
            self.event(2, changed.DESCRIPTOR.full_name, changed.SerializeToString(), now + 1),
            self.event(3, "shop.user.v1.NoSuchEvent", b"\x08\x01\x10\x02", now + 2),
        ]
        other = events_pb2.EmailChanged(email="bob@example.com")
        self.other = Event(
            f"ev-{uuid.uuid4().hex}", "user-usr-someone-else", "shop.user.v1.EmailChanged",
            other.SerializeToString(), now, 1,
        )  # fmt: skip

    def event(self, version: int, type_name: str, data: bytes, at: float) -> Event:
        return Event(f"ev-{uuid.uuid4().hex}", self.stream, type_name, data, at, version)


@pytest.fixture(scope="module")
async def published(nats: NatsServer) -> Published:
    stream = Published()
    async with await NatsEventBus.connect(nats.endpoint) as bus:
        await bus.publish("user", stream.events[0])
        await bus.publish("user", stream.other)
        for event in stream.events[1:]:
            await bus.publish("user", event)
    return stream


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, nats: NatsServer) -> Path:
    return write_mesh_yaml(tmp_path_factory.mktemp("events-cli"), nats.endpoint)


async def test_text_lists_the_streams_events_oldest_first_with_json_payloads(
    config_path: Path, published: Published
) -> None:
    code, out, err = await run_meshctl(config_path, "events", published.stream, "--topic", "user")

    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split() == ["VERSION", "TIME", "TYPE", "ID", "PAYLOAD"]
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert [line.split()[3] for line in lines] == [e.id for e in published.events]
    assert lines[0].split()[2] == "shop.user.v1.UserRegistered"
    assert lines[0].endswith(
        f'{{"userId": "{published.user_id}", "username": "ann", '
        '"email": "ann@example.com", "displayName": "Ann"}'
    )
    assert lines[1].endswith('{"email": "ann@example.org"}')
    assert lines[2].endswith("(unknown type, 4 bytes)")
    assert "bob@example.com" not in out  # another stream's


async def test_json_is_one_array_for_scripts(config_path: Path, published: Published) -> None:
    code, out, err = await run_meshctl(config_path, "events", published.stream, "--json")

    assert code == 0, err
    shown = json.loads(out)
    assert [e["version"] for e in shown] == [1, 2, 3]
    assert [e["id"] for e in shown] == [e.id for e in published.events]
    assert shown[1]["payload"] == {"email": "ann@example.org"}
    assert shown[1]["type"] == "shop.user.v1.EmailChanged"
    assert shown[1]["stream"] == published.stream
    assert shown[1]["occurred_at"] == pytest.approx(published.events[1].occurred_at)
    assert shown[2]["payload"] is None
    assert (shown[2]["problem"], shown[2]["size"]) == ("unknown type", 4)


async def test_limit_keeps_the_newest_events(config_path: Path, published: Published) -> None:
    code, out, err = await run_meshctl(
        config_path, "events", published.stream, "--json", "--limit", "2", "--topic", "user"
    )

    assert code == 0, err
    assert [e["version"] for e in json.loads(out)] == [2, 3]


async def test_a_stream_without_events_exits_1(config_path: Path, published: Published) -> None:
    code, out, err = await run_meshctl(config_path, "events", "user-usr-nobody", "--topic", "user")

    assert (code, out) == (1, "")
    assert "no events of stream 'user-usr-nobody' in topic 'user'" in err


async def test_a_bad_topic_or_limit_exits_2(config_path: Path, published: Published) -> None:
    code, _, err = await run_meshctl(config_path, "events", published.stream, "--topic", "Us er")
    assert code == 2
    assert "--topic" in err

    code, _, err = await run_meshctl(config_path, "events", published.stream, "--limit", "0")
    assert code == 2


async def test_a_broker_that_does_not_answer_exits_1(tmp_path: Path) -> None:
    path = write_mesh_yaml(tmp_path, f"127.0.0.1:{free_port()}")

    code, out, err = await run_meshctl(path, "events", "user-usr-x")

    assert (code, out) == (1, "")
    assert "cannot reach the event broker" in err
