"""Read a /metrics endpoint into {(name, labels): value}."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from mesh.supervisor import InstanceProcess

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(url: str) -> dict[Sample, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_instance(instance: InstanceProcess) -> dict[Sample, float]:
    """The /metrics of a serving instance, at the address it registered."""
    assert instance.endpoint is not None, f"{instance.instance_id} is not serving"
    return scrape(f"http://{instance.endpoint.metadata['metrics']}/metrics")


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`, 0 if absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)
