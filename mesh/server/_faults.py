"""Faults an instance injects on purpose into calls of its own methods, for demos and
tests of what callers do about them (retries, breakers, outlier detection, deadlines):
a share of a method's calls fails with a chosen status, a share waits first.

The instance injects them itself, after a call is admitted and before its handler
runs, so they act alike on both data planes. (A sidecar's Envoy injects faults of its
own, per service: `policy.faults`.) mesh.yaml declares them per method
(`services.<name>.faults`); `meshctl fault` sets a method's in etcd, which overrides
the declared one until it is cleared (LiveFaults).

Only methods of the service's own gRPC services can have one: health, reflection and
whatever else the runtime serves itself never fail on purpose. A failed call carries
ErrorInfo reason INJECTED_FAULT, so that callers and tests can tell it from a real one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from prometheus_client import CollectorRegistry, Counter

from mesh.config import MethodFault
from mesh.errors import ConfigError
from mesh.problems import InjectedFault

__all__ = [
    "ArmedFault",
    "FaultInjector",
    "Verdict",
    "arm",
    "decide",
    "resolve_method",
]

log = logging.getLogger("mesh.server")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass(frozen=True)
class ArmedFault:
    """A method's fault as the hot path uses it: shares from 0 to 1, seconds."""

    method: str
    """"pkg.Service/Method"."""
    fail_share: float
    code: grpc.StatusCode
    delay: float
    delay_share: float


def arm(method: str, fault: MethodFault) -> ArmedFault | None:
    """`fault` of `method` ("pkg.Service/Method"), None if it injects nothing."""
    if not fault.injects:
        return None
    return ArmedFault(
        method=method,
        fail_share=fault.fail_percent / 100,
        code=grpc.StatusCode[fault.status],
        delay=fault.delay_ms / 1000,
        delay_share=fault.delay_percent / 100,
    )


@dataclass(frozen=True)
class Verdict:
    """What to do to one call: wait `delay` seconds (0: not at all), then fail or not."""

    delay: float
    fail: bool


def decide(fault: ArmedFault, draw: Callable[[], float]) -> Verdict:
    """One call's fate; `draw()` gives uniform numbers in [0, 1). The delay and the
    failure are drawn apart, so their shares hold each on its own."""
    delayed = fault.delay > 0 and draw() < fault.delay_share
    failed = fault.fail_share > 0 and draw() < fault.fail_share
    return Verdict(fault.delay if delayed else 0.0, failed)


def resolve_method(name: str, methods: Collection[str]) -> str:
    """The one of `methods` ("pkg.Service/Method") that `name` names: itself, or the
    only one whose short name it is.

    Raises:
        ValueError: none is, or (a short name) several are.
    """
    if "/" in name:
        if name in methods:
            return name
        raise ValueError(f"serves no method {name}")
    matches = sorted(m for m in methods if m.rpartition("/")[2] == name)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"has several methods {name}: name one of {matches}")
    raise ValueError(f"serves no method {name}")


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


class FaultInjector:
    """The faults in force in one instance: mesh.yaml's, each overridden by etcd's.

    `armed` maps "/pkg.Service/Method" to its fault, for every method that has one; it
    is one dict, changed in place, so that guards look it up without a call (an empty
    dict when nothing is armed). `bind()` names the methods the instance serves of its
    own, before any call; `set_live()` takes etcd's faults whenever they change.
    """

    def __init__(
        self,
        service: str,
        declared: Mapping[str, MethodFault],
        registry: CollectorRegistry | None = None,
        *,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.service = service
        self.armed: dict[str, ArmedFault] = {}
        self._declared = dict(declared)
        self._live: dict[str, MethodFault] = {}
        self._methods: frozenset[str] | None = None  # None: not bound yet
        self._draw = draw
        self._injected = Counter(
            "mesh_injected_faults_total",
            "Calls failed or delayed on purpose (mesh.yaml faults, meshctl fault), by kind.",
            ["method", "kind"],
            registry=registry,
        )

    def bind(self, methods: Iterable[str]) -> None:
        """Arm the declared faults on `methods`, the instance's own ("pkg.Service/Method").

        Raises:
            ConfigError: a declared fault names a method that is none of them, naming
                its key (`services.<name>.faults.<method>`).
        """
        own = frozenset(methods)
        for name in self._declared:
            try:
                resolve_method(name, own)
            except ValueError as error:
                names = ", ".join(sorted(m.rpartition("/")[2] for m in own)) or "none"
                raise ConfigError(
                    f"services.{self.service}.faults.{name}",
                    f"{self.service} {error} (its methods: {names})",
                ) from None
        self._methods = own
        self._rearm()

    def set_live(self, live: Mapping[str, MethodFault]) -> None:
        """Etcd's faults (by method as each key names it), overriding mesh.yaml's."""
        self._live = dict(live)
        if self._methods is not None:
            self._rearm()

    def _in_force(self) -> dict[str, MethodFault]:
        methods = self._methods or frozenset()
        in_force = {resolve_method(name, methods): f for name, f in self._declared.items()}
        # A full name is more specific than a short one: apply it last, so it wins.
        for name, fault in sorted(self._live.items(), key=lambda item: "/" in item[0]):
            try:
                in_force[resolve_method(name, methods)] = fault
            except ValueError as error:
                log.warning("ignoring the live fault of %s: %s %s", name, self.service, error)
        return in_force

    def _rearm(self) -> None:
        armed = {}
        for method, declared in self._in_force().items():
            found = arm(method, declared)
            if found is not None:
                armed[f"/{method}"] = found
        if armed == self.armed:
            return
        self.armed.clear()
        self.armed.update(armed)
        for fault in armed.values():
            log.info(
                "injecting faults into %s: %s of calls fail with %s, %s wait %g ms",
                fault.method,
                _percent(fault.fail_share),
                fault.code.name,
                _percent(fault.delay_share if fault.delay else 0.0),
                fault.delay * 1000,
            )
        if not armed:
            log.info("injecting no faults")

    async def inject(self, fault: ArmedFault, context: Context) -> None:
        """Delay the call and/or fail it, as `fault` draws for it; a delay never outlasts
        the call's deadline (the call then fails with DEADLINE_EXCEEDED at it).

        Raises:
            InjectedFault: the call fails on purpose.
        """
        verdict = decide(fault, self._draw)
        if verdict.delay:
            self._injected.labels(fault.method, "delay").inc()
            remaining = context.time_remaining()
            if remaining is not None and remaining < verdict.delay:
                await asyncio.sleep(max(remaining, 0.0))
                raise InjectedFault(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    fault.method,
                    f"injected fault: the deadline passed during a delay of "
                    f"{verdict.delay * 1000:g} ms",
                )
            await asyncio.sleep(verdict.delay)
        if verdict.fail:
            self._injected.labels(fault.method, "fail").inc()
            raise InjectedFault(
                fault.code,
                fault.method,
                f"injected fault: {_percent(fault.fail_share)} of {fault.method} calls fail "
                f"on purpose (`meshctl fault {self.service}` shows why)",
            )
