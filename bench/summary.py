"""The shape of the benchmark's summary: what `print_report` reads and `--json` writes.

The README and people's scripts read these keys, so each one stays as it is. CPU
figures are in percent of one core, times in milliseconds unless the key says
otherwise; NaN (JSON `NaN`) marks a figure with nothing to compute it from.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "BurstsJson",
    "Checks",
    "EdgeJson",
    "EdgeRowJson",
    "EdgeSettingsJson",
    "GoalJson",
    "IdleOrdersJson",
    "InstanceCheck",
    "JsonCaseJson",
    "MachineJson",
    "PlacementJson",
    "PropagationJson",
    "RatioJson",
    "RelayPhaseJson",
    "SettingsJson",
    "ShopJson",
    "ShopRowJson",
    "ShopSettingsJson",
    "SidecarJson",
    "SidecarRowJson",
    "SidecarSettingsJson",
    "SpreadJson",
    "SubjectJson",
    "Summary",
    "TargetJson",
    "ThreadPlacement",
    "WindowJson",
]


class WindowJson(TypedDict):
    """One measured window of one subject."""

    calls_per_s: float
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_pct: float
    server_loop_thread_ran_pct: float
    server_loop_thread_waited_for_cpu_pct: float
    server_loop_thread_idle_pct: float
    client_cpu_pct: float
    driver_cpu_pct: float
    idle_servers_and_etcd_cpu_pct: float
    core_busy_pct: dict[str, float]  # core number (as text) -> percent busy
    other_cpu_pct: float


class SubjectJson(TypedDict):
    """One row: a subject's figures pooled over all its windows."""

    row: int
    name: str
    detail: str
    calls: int
    measured_s: float
    calls_per_s: float
    calls_per_s_per_round: list[float]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float | None  # None: no call completed
    errors: int
    error_samples: list[str]
    server_cpu_pct: float
    server_loop_thread_ran_pct: float
    server_loop_thread_waited_for_cpu_pct: float
    server_loop_thread_idle_pct: float
    server_cpu_us_per_call: float
    client_cpu_pct: float
    client_cpu_pct_per_worker: list[float]
    client_cpu_us_per_call: float
    driver_cpu_pct: float
    idle_servers_and_etcd_cpu_pct: float
    machine_cpu_pct: float
    core_busy_pct: dict[str, float]
    other_cpu_pct: float
    windows: list[WindowJson]


class RatioJson(TypedDict):
    """A subject against a baseline; 1.0 is parity, higher is better for the subject."""

    subject: str
    baseline: str
    rows: str  # "3/5": subject row / baseline row
    calls_per_s_per_round: list[float]
    calls_per_s_median: float
    calls_per_s_min: float
    calls_per_s_max: float
    calls_per_s_pooled: float
    p50_inverse: float
    p99_inverse: float
    server_cpu_per_call_inverse: float


class MachineJson(TypedDict):
    cores: int | None  # os.cpu_count(): None if unknown
    python: str
    grpcio: str
    uvloop: str


class PlacementJson(TypedDict):
    cores: list[int]
    pinned: bool
    server_cpus: list[int]  # empty if not pinned
    load_cpus: list[int]
    note: str


class SettingsJson(TypedDict):
    rounds: int
    window_s: float
    warmup_s: float
    workers: int
    concurrency_per_worker: int
    in_flight: int
    order_each_round: list[str]


class TargetJson(TypedDict):
    ratio: str
    statistic: str
    minimum: float
    value: float
    min: float
    max: float
    met: bool


class InstanceCheck(TypedDict):
    """Evidence that a ShopMesh instance ran its whole stack."""

    subject: str
    instance_id: str
    trace_sample_ratio: float
    authz_denies_product_identity: bool
    metrics_handled_ok_during_load: int
    metrics_handled_ok_total: int
    trace_spans_get_product: int
    trace_file: str


class ThreadPlacement(TypedDict):
    """A process's threads against the core(s) planned for it."""

    pid: int
    cpus: str
    threads: int
    threads_elsewhere: int


class Checks(TypedDict):
    instances: list[InstanceCheck]
    placement: dict[str, ThreadPlacement]  # by process label; empty if not pinned


class SidecarRowJson(TypedDict):
    """One path (proxyless, or through two sidecars) at one load, pooled over rounds."""

    row: int
    name: str
    detail: str
    in_flight: int
    calls: int
    measured_s: float
    calls_per_s: float
    calls_per_s_per_round: list[float]
    p50_ms: float
    p99_ms: float
    p50_ms_per_round: list[float]
    errors: int
    error_samples: list[str]
    app_cpu_us_per_call: float  # the product instance's own process
    app_loop_thread_idle_pct: float
    inbound_envoy_cpu_us_per_call: float  # the product instance's sidecar
    caller_envoy_cpu_us_per_call: float  # the caller's sidecar
    inbound_envoy_switches_per_call: float  # context switches of all its threads
    caller_envoy_switches_per_call: float
    client_cpu_us_per_call: float  # the load processes
    core_busy_pct: dict[str, float]
    other_cpu_pct: float


class GoalJson(TypedDict):
    figure: str
    comparison: str  # ">=" or "<="
    bound: float
    value: float
    met: bool


class PropagationJson(TypedDict):
    """Registry changes until every sidecar's /clusters showed them (ms; NaN: never
    seen by that sidecar, inf in the totals: never seen by all)."""

    sidecars: list[str]
    changes: int
    actions: list[str]  # "register" or "deregister", per change
    everywhere_ms: list[float]
    first_sidecar_ms: list[float]
    per_sidecar_ms: list[list[float]]  # per change, per sidecar in `sidecars` order
    missed: int
    median_ms: float
    max_ms: float
    first_sidecar_median_ms: float
    cpu_ms_per_change: dict[str, float]  # by process group, e.g. "control plane"
    median_goal_ms: float
    max_goal_ms: float
    met: bool


class SidecarSettingsJson(TypedDict):
    """Per load level: the run's load, low load, light load (one per load process)."""

    rounds: int
    window_s: list[float]
    warmup_s: list[float]
    in_flight: list[int]
    order_each_round: list[str]  # after the subjects above, in each round
    placement: str


class SidecarJson(TypedDict):
    """The sidecar data plane against the proxyless one, and the registry's reach."""

    settings: SidecarSettingsJson
    rows: list[SidecarRowJson]
    ratio: RatioJson  # calls/s through two sidecars / proxyless, at the run's load
    p50_added_ms: float  # at low load, pooled p50s
    p50_added_ms_per_round: list[float]
    p50_added_light_load_ms: float  # at light load: the hops' own time, near enough
    envoy_cpu_us_per_call: float  # both sidecars, at the run's load
    app_handled_ok_during_load: int  # GetProduct OK in product-3's /metrics: calls got through
    propagation: PropagationJson
    goals: list[GoalJson]


class EdgeRowJson(TypedDict):
    """One subject of the edge rows, pooled over the rounds. Its "front" is the process
    the HTTP (or, for direct gRPC, the gRPC) load reaches: Envoy, the edge, or the
    backend itself; behind every other front is the same backend."""

    row: int
    name: str
    detail: str
    load: str  # what h2load sent, e.g. "HTTP/1.1 keep-alive, 64 connections"
    candidate: bool  # a candidate server's row: its errors do not fail the run
    in_flight: int
    calls: int
    measured_s: float
    calls_per_s: float
    calls_per_s_per_round: list[float]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_ms_per_round: list[float]
    max_ms: float | None  # None: no call completed
    errors: int
    error_samples: list[str]
    front_cpu_pct: float
    front_cpu_us_per_call: float
    front_loop_thread_idle_pct: float | None  # a Python front's asyncio thread; None: Envoy
    backend_cpu_pct: float
    backend_cpu_us_per_call: float  # the front's own figure for direct gRPC
    server_side_cpu_us_per_call: float  # front and backend together (direct: the backend)
    load_cpu_pct: float  # h2load
    load_cpu_us_per_call: float
    core_busy_pct: dict[str, float]
    other_cpu_pct: float


class JsonCaseJson(TypedDict):
    """One JSON candidate case: a shop message one way, with orjson and with the
    stdlib's json, as the edge does it (json_format's dict, then the serializer)."""

    message: str
    direction: str  # "encode" (message -> JSON bytes) or "decode" (bytes -> message)
    json_bytes: int
    orjson_us: float  # json_format plus orjson, per message
    stdlib_us: float  # json_format plus json
    json_format_us: float  # MessageToDict or ParseDict alone
    orjson_alone_us: float  # dumps or loads alone
    stdlib_alone_us: float
    speedup: float  # stdlib_us / orjson_us: what orjson saves on the whole step
    speedup_alone: float  # of the serializers alone
    same_result: bool  # both give the same bytes (encode) or the same message (decode)


class EdgeSettingsJson(TypedDict):
    rounds: int
    window_s: float
    warmup_s: float
    in_flight: int
    order_each_round: list[str]
    placement: str
    url: str  # what the HTTP subjects are asked for
    skipped: dict[str, str]  # candidate servers not measured, and why


class EdgeJson(TypedDict):
    """The REST edge against Envoy's grpc_json_transcoder and direct gRPC, the HTTP
    server candidates, the JSON candidates, and the goals."""

    settings: EdgeSettingsJson
    versions: dict[str, str]  # envoy, h2load, httptools, orjson, aiohttp, uvicorn ...
    rows: list[EdgeRowJson]
    ratios: dict[str, RatioJson]  # e.g. "edge_vs_envoy", "aiohttp_vs_edge"
    p99_edge_over_envoy: float  # pooled p99s: the goal's figure (lower is better)
    p99_edge_over_envoy_per_round: list[float]
    same_json: bool  # Envoy and the edge answered the check request with the same JSON
    placement_check: dict[str, ThreadPlacement]  # by process label; empty if not pinned
    json_candidates: list[JsonCaseJson]
    goals: list[GoalJson]


class ShopRowJson(TypedDict):
    """One subject of the shop part (GetProduct or PlaceOrder), pooled over the rounds.
    CPU per call is each mesh process's (and the broker's) over the subject's calls:
    for PlaceOrder, what one order costs each of them."""

    row: int
    name: str
    detail: str
    method: str
    in_flight: int
    calls: int
    measured_s: float
    calls_per_s: float
    calls_per_s_per_round: list[float]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float | None  # None: no call completed
    errors: int
    error_samples: list[str]
    cpu_us_per_call: dict[str, float]  # by process: product, inventory, order, ..., nats
    mesh_cpu_us_per_call: float  # all of them together
    consumer_cpu_us_per_call: float  # the relay consumer's process
    load_cpu_us_per_call: float  # the load processes
    core_busy_pct: dict[str, float]
    other_cpu_pct: float


class SpreadJson(TypedDict):
    """How a set of durations spreads, in milliseconds (NaN without any)."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class IdleOrdersJson(TypedDict):
    """Orders placed one at a time at idle, each awaited before the next."""

    orders: int
    errors: int
    error_samples: list[str]
    latency: SpreadJson  # of each PlaceOrder call, as the driver saw it


class BurstsJson(TypedDict):
    """How a phase's events reached the broker: those stored less than a gap apart
    count as one burst (one relay batch: its streams are published side by side)."""

    gap_ms: float  # the gap that separates two bursts
    bursts: int
    events_p50: float  # events per burst
    events_max: int
    between: SpreadJson  # from one burst's start to the next's: the relay's cycle


class RelayPhaseJson(TypedDict):
    """The outbox relay's latency in one phase: from an event's occurred_at (set when
    the event is built, just before the transaction that records it commits) to the
    consumer's handler, and its stages."""

    phase: str  # "under load", "idle", "relay alone"
    detail: str
    events: int  # received, of those that occurred in the phase
    expected: int | None  # events the phase made (None: not known exactly)
    commit_to_consumer: SpreadJson
    stages: dict[str, SpreadJson]  # in the order they happen; they add up to the whole
    by_type: dict[str, SpreadJson]  # commit_to_consumer per event type (short name)
    consumer_cycle: SpreadJson  # gap between back-to-back deliveries: fetch, handle, ack
    bursts: BurstsJson


class ShopSettingsJson(TypedDict):
    rounds: int
    window_s: float
    warmup_s: float
    workers: int
    concurrency_per_worker: int
    in_flight: int
    in_flight_note: str  # why this many
    order_each_round: list[str]
    placement: str
    idle_orders: int
    relay_rate_per_s: float
    relay_events: int


class ShopJson(TypedDict):
    """PlaceOrder end to end against a bare unary call in the same mesh, and the
    outbox relay's latency from commit to consumer."""

    settings: ShopSettingsJson
    rows: list[ShopRowJson]
    ratio: RatioJson  # PlaceOrder calls/s / GetProduct calls/s, per round
    p50_over_baseline: float  # PlaceOrder's pooled p50 / GetProduct's
    p99_over_baseline: float
    idle_orders: IdleOrdersJson
    relay: list[RelayPhaseJson]
    placement_check: dict[str, ThreadPlacement]  # by process label; empty if not pinned
    goals: list[GoalJson]


class Summary(TypedDict):
    benchmark: str
    machine: MachineJson
    placement: PlacementJson
    settings: SettingsJson
    subjects: list[SubjectJson]
    ratios: dict[str, RatioJson]  # by pair name, e.g. "shopmesh_vs_bare_product"
    target: TargetJson
    checks: Checks
    sidecar: SidecarJson | None  # None with --no-sidecar
    edge: EdgeJson | None  # None with --no-edge, or without h2load
    shop: ShopJson | None  # None with --no-shop
