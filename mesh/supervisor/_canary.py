"""`meshctl canary`: move a service's calls to a new version step by step, judging each
step by what the callers' sidecars saw, and roll back at the first bad step.

Each step sets the split (the canary p %, the stable version the rest), waits the
interval, then reads the canary cluster's counters from every sidecar's admin
(`/stats?format=json`). Envoy's grpc_stats filter counts each call once, by its final
gRPC status (`cluster.<c>.grpc.<pkg.Service>.<Method>.<status>` and `.total`), after
the sidecar's own retries: the error rate is what the calling app saw. gRPC answers with
HTTP 200, so HTTP codes say nothing; only the gRPC status does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.config import MeshConfig
from mesh.envoy import cluster_name
from mesh.errors import ConfigError, MeshError
from mesh.registry import EtcdClient
from mesh.supervisor._traffic import (
    Rollout,
    admin_get,
    apply_weights,
    format_weights,
    known_versions,
    live_weights,
    registered_endpoints,
    sidecars_of,
)

__all__ = [
    "CanaryPlan",
    "CanaryResult",
    "ClusterStats",
    "MethodRate",
    "StepResult",
    "Verdict",
    "canary_weights",
    "cluster_stats",
    "judge",
    "parse_error_rate",
    "parse_interval",
    "parse_steps",
    "run_canary",
    "stable_version",
]

_OK = "0"  # gRPC status OK, as grpc_stats names its counter
_P99 = 99.0
_PERCENT = re.compile(r"[0-9]{1,3}")
_INTERVAL = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,6})?)(ms|s|m)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
_MAX_INTERVAL = 3600.0
_SHOWN = 40


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


# -- flags -------------------------------------------------------------------------------


def parse_steps(text: str) -> tuple[int, ...]:
    """`10,25,50,100`: percentages of calls for the canary, rising, ending at 100 (the
    promotion); raises ConfigError("--steps", ...)."""
    steps = []
    for part in (p.strip() for p in text.split(",")):
        if _PERCENT.fullmatch(part) is None or not 1 <= int(part) <= 100:
            raise ConfigError(
                "--steps", f"give percentages from 1 to 100 like 10,25,50,100, got {_shown(part)}"
            )
        steps.append(int(part))
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(
            "--steps", "each step must give the canary more calls than the one before"
        )
    if steps[-1] != 100:
        raise ConfigError("--steps", "the last step must be 100 (the promotion)")
    return tuple(steps)


def parse_interval(text: str) -> float:
    """ "10s", "500ms", "1m" or a bare number of seconds, as seconds; raises
    ConfigError("--interval", ...)."""
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            "--interval", f"give a duration like 10s, 500ms or 1m, got {_shown(text)}"
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not 0 < seconds <= _MAX_INTERVAL:
        raise ConfigError("--interval", f"must be above 0 and at most 1h, got {_shown(text)}")
    return seconds


def parse_error_rate(text: str) -> float:
    """A fraction from 0 to 1 (0.01 is 1 %); raises ConfigError("--max-error-rate", ...)."""
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 1:
        raise ConfigError(
            "--max-error-rate", f"give a fraction from 0 to 1 (0.01 is 1%), got {_shown(text)}"
        )
    return rate


# -- the split of one step ---------------------------------------------------------------


def stable_version(split: Mapping[str, int], canary: str) -> str:
    """The version that has the most calls before the canary starts (the first one on
    a tie). Raises ConfigError if the service runs no other version, MeshError if no
    other version has calls now (rolling back to it would stop the service)."""
    others = {version: weight for version, weight in split.items() if version != canary}
    if not others:
        raise ConfigError(
            "version", f"the service runs only {canary}: a canary needs a stable version beside it"
        )
    stable = max(others, key=lambda version: others[version])  # max keeps the first on a tie
    if others[stable] == 0:
        raise MeshError(
            f"no version but {canary} gets calls now ({format_weights(split)}): "
            f"give the stable one its calls back first, e.g. `meshctl traffic <service> --switch {stable}`"
        )
    return stable


def canary_weights(
    versions: Sequence[str], stable: str, canary: str, percent: int
) -> dict[str, int]:
    """The canary `percent`, the stable version the rest, every other version none."""
    shares = {canary: percent, stable: 100 - percent}
    return {version: shares.get(version, 0) for version in versions}


# -- what the sidecars counted -----------------------------------------------------------


@dataclass(frozen=True)
class ClusterStats:
    """One sidecar's counters of one cluster: calls and OK calls per method
    ("pkg.Service/Method"), and the p99 of upstream_rq_time in ms (None: no data)."""

    totals: Mapping[str, int]
    oks: Mapping[str, int]
    p99_ms: float | None


def cluster_stats(stats: Mapping[str, Any], cluster: str) -> ClusterStats:
    """`cluster`'s numbers from an admin's `/stats?format=json`."""
    prefix = f"cluster.{cluster}.grpc."
    totals: dict[str, int] = {}
    oks: dict[str, int] = {}
    p99: float | None = None
    for entry in stats.get("stats", ()):
        if "histograms" in entry:
            p99 = _p99(entry["histograms"], f"cluster.{cluster}.upstream_rq_time")
            continue
        name = str(entry.get("name", ""))
        if not name.startswith(prefix):
            continue
        qualified, _, counter = name.removeprefix(prefix).rpartition(".")
        pkg_service, _, method = qualified.rpartition(".")
        if not pkg_service:
            continue
        key = f"{pkg_service}/{method}"
        if counter == "total":
            totals[key] = int(entry.get("value", 0))
        elif counter == _OK:
            oks[key] = int(entry.get("value", 0))
    return ClusterStats(totals, oks, p99)


def _p99(histograms: Mapping[str, Any], name: str) -> float | None:
    """The p99 of histogram `name`: of the last flush interval if it had data, else
    since the start; None before Envoy's first stats flush (every 5 s by default)."""
    quantiles = list(histograms.get("supported_quantiles", ()))
    if _P99 not in quantiles:
        return None
    for histogram in histograms.get("computed_quantiles", ()):
        if histogram.get("name") == name:
            value = histogram["values"][quantiles.index(_P99)]
            for kind in ("interval", "cumulative"):
                if value.get(kind) is not None:
                    return float(value[kind])
    return None


@dataclass(frozen=True)
class MethodRate:
    method: str  # "pkg.Service/Method"
    calls: int
    errors: int  # calls whose gRPC status was not OK

    @property
    def rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Verdict:
    """One step judged: its calls to the canary, per method, and the method that broke
    the bound, if one did."""

    methods: tuple[MethodRate, ...]
    p99_ms: float | None
    breach: MethodRate | None

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.methods)

    @property
    def error_rate(self) -> float:
        return sum(m.errors for m in self.methods) / self.calls if self.calls else 0.0


def _since(after: int, before: int) -> int:
    """A counter's growth; a smaller value means the sidecar restarted: all is new."""
    return after - before if after >= before else after


def judge(
    before: Mapping[str, ClusterStats], after: Mapping[str, ClusterStats], max_error_rate: float
) -> Verdict:
    """The step between two snapshots (by sidecar) of the canary's cluster. A method
    breaks the bound when more than `max_error_rate` of its calls (at least one) failed;
    the worst one is named. The p99 is the highest any sidecar saw. A sidecar missing
    from `before` is left out: its counters hold calls from before the step."""
    calls: dict[str, int] = {}
    errors: dict[str, int] = {}
    for sidecar, now in after.items():
        then = before.get(sidecar)
        if then is None:
            continue
        for method, total in now.totals.items():
            made = _since(total, then.totals.get(method, 0))
            ok = _since(now.oks.get(method, 0), then.oks.get(method, 0))
            calls[method] = calls.get(method, 0) + made
            errors[method] = errors.get(method, 0) + max(made - ok, 0)
    methods = tuple(MethodRate(m, calls[m], errors[m]) for m in sorted(calls) if calls[m])
    broken = [m for m in methods if m.rate > max_error_rate]
    breach = max(broken, key=lambda m: (m.rate, m.calls), default=None)
    p99s = [s.p99_ms for s in after.values() if s.p99_ms is not None]
    return Verdict(methods, max(p99s, default=None), breach)


# -- the canary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryPlan:
    service: str
    version: str
    steps: tuple[int, ...]
    interval: float  # seconds each step runs before it is judged
    max_error_rate: float


@dataclass(frozen=True)
class StepResult:
    percent: int
    verdict: Verdict


@dataclass(frozen=True)
class CanaryResult:
    """Its outcome is "promoted", or "rolled back" when a step broke the bound (`breach`)."""

    outcome: str
    stable: str
    steps: tuple[StepResult, ...]
    breach: MethodRate | None = None

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"


Say = Callable[[str], None]


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%".replace(".0%", "%")


def progress_line(index: int, plan: CanaryPlan, verdict: Verdict) -> str:
    p99 = "n/a" if verdict.p99_ms is None else f"{verdict.p99_ms:.3g} ms"
    percent = plan.steps[index]
    return (
        f"step {index + 1}/{len(plan.steps)}: {plan.version} at {percent}%: "
        f"{verdict.calls} calls, error rate {_percent(verdict.error_rate)}, p99 {p99}"
    )


async def _snapshot(
    config: MeshConfig, etcd: EtcdClient, cluster: str
) -> tuple[dict[str, ClusterStats], list[str]]:
    """`cluster`'s stats on every sidecar that answers, and the sidecars that do not."""
    sidecars = sidecars_of(await registered_endpoints(config, etcd))
    query = urllib.parse.quote(f"^cluster\\.{re.escape(cluster)}\\.")
    answers = await asyncio.gather(
        *(admin_get(s.admin, f"/stats?format=json&filter={query}") for s in sidecars),
        return_exceptions=True,
    )
    found, silent = {}, []
    for sidecar, answer in zip(sidecars, answers, strict=True):
        try:
            if not isinstance(answer, str):
                raise answer
            found[sidecar.instance] = cluster_stats(_json(answer), cluster)
        except (OSError, ValueError):
            silent.append(sidecar.instance)
    return found, silent


def _json(text: str) -> Mapping[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


class _Canary:
    """One run of a plan: sets each step's split and judges it."""

    def __init__(
        self, config: MeshConfig, etcd: EtcdClient, plan: CanaryPlan, say: Say, timeout: float
    ) -> None:
        self._config = config
        self._etcd = etcd
        self._plan = plan
        self._say = say
        self._timeout = timeout
        self._cluster = cluster_name(plan.service, plan.version)
        self._versions: tuple[str, ...] = ()
        self.stable = ""

    async def prepare(self) -> None:
        plan, config = self._plan, self._config
        spec = config.service(plan.service)
        self._versions = known_versions(spec, await registered_endpoints(config, self._etcd))
        if plan.version not in self._versions:
            raise ConfigError(
                "version",
                f"{plan.service} runs no version {_shown(plan.version)} (it runs {', '.join(self._versions)})",
            )
        live = await live_weights(config, self._etcd, plan.service)
        split = live if live is not None else spec.declared_weights()
        in_force = {version: split.get(version, 0) for version in self._versions}
        self.stable = stable_version(in_force, plan.version)

    async def _set(self, percent: int) -> Rollout:
        weights = canary_weights(self._versions, self.stable, self._plan.version, percent)
        rollout = await apply_weights(
            self._config, self._etcd, self._plan.service, weights, timeout=self._timeout
        )
        late = [c.instance for c in rollout.sidecars if not c.confirmed]
        if late:
            self._say(f"  ! not confirmed within {self._timeout:g}s on {', '.join(late)}")
        return rollout

    async def step(self, index: int) -> StepResult:
        percent = self._plan.steps[index]
        await self._set(percent)
        before, _ = await _snapshot(self._config, self._etcd, self._cluster)
        await asyncio.sleep(self._plan.interval)
        after, silent = await _snapshot(self._config, self._etcd, self._cluster)
        verdict = judge(before, after, self._plan.max_error_rate)
        self._say(progress_line(index, self._plan, verdict))
        if silent:
            self._say(f"  ! no stats from {', '.join(silent)}: their calls are not judged")
        if not verdict.calls:
            self._say(f"  ! no calls reached {self._plan.version} in this step: nothing to judge")
        return StepResult(percent, verdict)

    async def roll_back(self) -> None:
        rollout = await self._set(0)
        self._say(f"rolled back: {self._plan.service} {format_weights(rollout.weights)}")

    async def promote(self) -> None:
        rollout = await self._set(100)
        self._say(f"promoted: {self._plan.service} {format_weights(rollout.weights)}")


async def run_canary(
    config: MeshConfig,
    etcd: EtcdClient,
    plan: CanaryPlan,
    say: Say,
    *,
    confirm_timeout: float = 5.0,
) -> CanaryResult:
    """Run `plan`, reporting each step through `say`. Raises ConfigError if the
    service or version is unknown or the service runs one version only. Cancelled (Ctrl-C
    under asyncio.run), it rolls back before it re-raises."""
    canary = _Canary(config, etcd, plan, say, confirm_timeout)
    await canary.prepare()
    say(
        f"canary of {plan.service} {plan.version} against {canary.stable}: steps "
        f"{','.join(map(str, plan.steps))}%, {plan.interval:g}s each, "
        f"error rate bound {_percent(plan.max_error_rate)}"
    )
    done: list[StepResult] = []
    try:
        for index in range(len(plan.steps)):
            result = await canary.step(index)
            done.append(result)
            breach = result.verdict.breach
            if breach is not None:
                say(
                    f"{breach.method}: error rate {_percent(breach.rate)} "
                    f"({breach.errors} of {breach.calls} calls) is above {_percent(plan.max_error_rate)}"
                )
                await canary.roll_back()
                return CanaryResult("rolled back", canary.stable, tuple(done), breach)
    except asyncio.CancelledError:
        say("interrupted: rolling back")
        await asyncio.shield(canary.roll_back())
        raise
    await canary.promote()
    return CanaryResult("promoted", canary.stable, tuple(done))
