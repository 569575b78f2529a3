"""services.order.sweeper on a real SQLite store, with a scripted inventory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from services.order.domain import Line
from services.order.store import OrderStore
from services.order.sweeper import HoldSweeper

NOW = 1_000_000_000_000  # ns
GRACE = 60.0


class Inventory:
    def __init__(self) -> None:
        self.released: list[str] = []
        self.down = False

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        raise AssertionError("the sweeper never reserves")

    async def release(self, order_id: str) -> None:
        if self.down:
            raise ConnectionError("inventory is down")
        self.released.append(order_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OrderStore]:
    store = OrderStore(tmp_path / "order.db")
    yield store
    store.close()


def seconds_ago(seconds: float) -> int:
    return NOW - int(seconds * 1e9)


async def test_old_holds_are_released_and_dropped_young_ones_kept(store: OrderStore) -> None:
    store.hold("ord-old", seconds_ago(GRACE + 1))
    store.hold("ord-young", seconds_ago(GRACE - 1))  # its PlaceOrder may still be running
    inventory = Inventory()
    sweeper = HoldSweeper(store, inventory, grace=GRACE, clock=lambda: NOW)

    assert await sweeper.sweep() == ["ord-old"]
    assert inventory.released == ["ord-old"]
    assert await sweeper.sweep() == []  # dropped once released
    assert store.claim_holds(2**62) == ["ord-young"]


async def test_a_failed_release_is_tried_again_next_sweep(store: OrderStore) -> None:
    store.hold("ord-1", seconds_ago(GRACE + 1))
    inventory = Inventory()
    sweeper = HoldSweeper(store, inventory, grace=GRACE, clock=lambda: NOW)

    inventory.down = True
    assert await sweeper.sweep() == []
    inventory.down = False
    assert await sweeper.sweep() == ["ord-1"]
    assert inventory.released == ["ord-1"]
