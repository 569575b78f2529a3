"""Fixtures shared by the service unit tests: no processes, no network."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest


class UnusedContext:
    """Stands in for grpc.aio.ServicerContext. Servicers report failures by raising
    mesh.problems exceptions, so touching the context at all fails the test."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the servicer used context.{name}")


@pytest.fixture
def context() -> Any:
    return UnusedContext()
