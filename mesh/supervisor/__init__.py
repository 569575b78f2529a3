"""Process supervision: etcd, the event broker, the control plane and service
instances as child processes, restarted with backoff when they die, for meshctl and tests; the control channel meshctl uses to
ask a running supervisor for a rolling restart; and the live traffic commands (version
weights, canaries, the policy table, `meshctl apply`)."""

from mesh.process import find_binary, free_port, log_tail, relative_path, stop_process
from mesh.state import InstanceRecord, MeshState, clear_state, read_state, write_state
from mesh.supervisor._canary import (
    CanaryPlan,
    CanaryResult,
    ClusterStats,
    MethodRate,
    StepResult,
    Verdict,
    canary_weights,
    cluster_stats,
    judge,
    parse_error_rate,
    parse_interval,
    parse_steps,
    run_canary,
    stable_version,
)
from mesh.supervisor._control import ControlEvent, ControlRequest, ProtocolError, send_command
from mesh.supervisor._controlplane import ControlPlaneServer
from mesh.supervisor._demo import DemoError, DemoStep, run_demo
from mesh.supervisor._etcd_server import EtcdServer
from mesh.supervisor._health import check_health
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._nats_server import NatsServer
from mesh.supervisor._policy import AppliedAuthz, PolicyRow, Support, apply_authz, policy_rows
from mesh.supervisor._restart import RestartPolicy
from mesh.supervisor._status import InstanceStatus, mesh_status, supervisor_status
from mesh.supervisor._supervisor import MeshAlreadyRunning, Supervisor
from mesh.supervisor._token import TokenError, fetch_token
from mesh.supervisor._traffic import (
    CONFIRM_TIMEOUT,
    Confirmation,
    Rollout,
    Sidecar,
    SidecarTraffic,
    TrafficReport,
    admin_get,
    apply_weights,
    format_weights,
    known_versions,
    live_weights,
    parse_weights,
    registered_endpoints,
    route_weights,
    runtime_overrides,
    set_weights,
    sidecars_of,
    switch_weights,
    traffic_report,
    validate_weights,
)

__all__ = [
    "CONFIRM_TIMEOUT",
    "AppliedAuthz",
    "CanaryPlan",
    "CanaryResult",
    "ClusterStats",
    "Confirmation",
    "ControlEvent",
    "ControlPlaneServer",
    "ControlRequest",
    "DemoError",
    "DemoStep",
    "EtcdServer",
    "InstanceProcess",
    "InstanceRecord",
    "InstanceStatus",
    "MeshAlreadyRunning",
    "MeshState",
    "MethodRate",
    "NatsServer",
    "PolicyRow",
    "ProtocolError",
    "RestartPolicy",
    "Rollout",
    "Sidecar",
    "SidecarTraffic",
    "StepResult",
    "Supervisor",
    "Support",
    "TokenError",
    "TrafficReport",
    "Verdict",
    "admin_get",
    "apply_authz",
    "apply_weights",
    "canary_weights",
    "check_health",
    "clear_state",
    "cluster_stats",
    "fetch_token",
    "find_binary",
    "format_weights",
    "free_port",
    "judge",
    "known_versions",
    "live_weights",
    "log_tail",
    "mesh_status",
    "parse_error_rate",
    "parse_interval",
    "parse_steps",
    "parse_weights",
    "policy_rows",
    "read_state",
    "registered_endpoints",
    "relative_path",
    "route_weights",
    "run_canary",
    "run_demo",
    "runtime_overrides",
    "send_command",
    "set_weights",
    "sidecars_of",
    "stable_version",
    "stop_process",
    "supervisor_status",
    "switch_weights",
    "traffic_report",
    "validate_weights",
    "write_state",
]
