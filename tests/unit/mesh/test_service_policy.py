"""The proxyless client's policy per service: mesh.yaml's `client:` section is the
default, a service's `policy:` overrides its timeout (when set), retry attempts and
per-try timeout; backoff, breaker and connect timeout stay the client's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.client import DirectDataPlane, ServiceChannel, data_plane, service_policy
from mesh.config import (
    BreakerPolicy,
    ClientPolicy,
    MeshConfig,
    RetryPolicy,
    RouteRetries,
    TrafficPolicy,
    parse_config,
)
from mesh.identity import IdentityFiles, ensure_certificates
from tests.harness.inprocess import StaticSource

CLIENT = ClientPolicy(
    timeout=4.0,
    connect_timeout=0.5,
    retry=RetryPolicy(max_attempts=2, per_try_timeout=3.0, initial_backoff=0.2, jitter=0.5),
    breaker=BreakerPolicy(failure_threshold=7, reset_timeout=3.0),
)


def test_a_services_policy_overrides_timeout_attempts_and_per_try_timeout() -> None:
    traffic = TrafficPolicy(timeout=1.5, retries=RouteRetries(attempts=5, per_try_timeout=0.5))

    policy = service_policy(CLIENT, traffic)

    assert policy.timeout == 1.5
    assert (policy.retry.max_attempts, policy.retry.per_try_timeout) == (5, 0.5)
    # The rest is the client section's.
    assert policy.connect_timeout == CLIENT.connect_timeout
    assert policy.breaker == CLIENT.breaker
    assert (policy.retry.initial_backoff, policy.retry.jitter) == (0.2, 0.5)
    assert policy.retry.max_backoff == CLIENT.retry.max_backoff
    assert policy.retry.multiplier == CLIENT.retry.multiplier


def test_without_its_own_timeout_a_service_gets_the_clients() -> None:
    assert service_policy(CLIENT, TrafficPolicy()).timeout == CLIENT.timeout


def test_what_a_policy_leaves_unset_of_its_retries_is_the_client_sections() -> None:
    policy = service_policy(CLIENT, TrafficPolicy())

    assert policy.retry.max_attempts == CLIENT.retry.max_attempts
    assert policy.retry.per_try_timeout == CLIENT.retry.per_try_timeout
    assert RouteRetries().attempts is None


def test_a_service_without_a_policy_gets_the_client_section_as_it_is() -> None:
    assert service_policy(CLIENT, None) is CLIENT


@pytest.fixture
def config(tmp_path: Path) -> MeshConfig:
    config = parse_config(
        {
            "mesh": {"dataplane": "direct"},
            "client": {"timeout": 4.0, "retry": {"max_attempts": 2, "per_try_timeout": 3.0}},
            "services": {
                "product": {
                    "policy": {
                        "timeout": 1.5,
                        "retries": {"attempts": 5, "per_try_timeout": 0.5},
                    }
                },
                "inventory": {},
            },
        },
        tmp_path / "mesh.yaml",
    )
    ensure_certificates(tmp_path / "certs", config.trust_domain, config.namespace, ["order"])
    return config


async def test_the_direct_plane_gives_each_service_its_policy(
    config: MeshConfig, tmp_path: Path
) -> None:
    plane = data_plane(config, IdentityFiles(tmp_path / "certs", "order"), StaticSource([]))
    assert isinstance(plane, DirectDataPlane)
    channels = {name: plane.open(name) for name in ("product", "inventory", "search")}
    try:
        policies = {name: channel.policy for name, channel in channels.items()}
    finally:
        for channel in channels.values():
            await channel.close()

    assert all(isinstance(c, ServiceChannel) for c in channels.values())
    product, inventory, search = policies["product"], policies["inventory"], policies["search"]
    assert (product.timeout, product.retry.max_attempts, product.retry.per_try_timeout) == (
        1.5,
        5,
        0.5,
    )
    assert (inventory.timeout, inventory.retry.max_attempts) == (4.0, 2)  # client.retry's
    assert search == config.client  # not in mesh.yaml: the client section alone
