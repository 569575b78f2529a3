"""Process supervision: etcd and service instances as child processes, restarted with
backoff when they die, for meshctl and tests; and the control channel meshctl uses to
ask a running supervisor for a rolling restart."""

from mesh.state import InstanceRecord, MeshState, clear_state, read_state, write_state
from mesh.supervisor._control import ControlEvent, ControlRequest, ProtocolError, send_command
from mesh.supervisor._etcd_server import EtcdServer
from mesh.supervisor._health import check_health
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._process import find_binary, free_port, log_tail, relative_path, stop_process
from mesh.supervisor._restart import RestartPolicy
from mesh.supervisor._status import InstanceStatus, mesh_status, supervisor_status
from mesh.supervisor._supervisor import MeshAlreadyRunning, Supervisor

__all__ = [
    "ControlEvent",
    "ControlRequest",
    "EtcdServer",
    "InstanceProcess",
    "InstanceRecord",
    "InstanceStatus",
    "MeshAlreadyRunning",
    "MeshState",
    "ProtocolError",
    "RestartPolicy",
    "Supervisor",
    "check_health",
    "clear_state",
    "find_binary",
    "free_port",
    "log_tail",
    "mesh_status",
    "read_state",
    "relative_path",
    "send_command",
    "stop_process",
    "supervisor_status",
    "write_state",
]
