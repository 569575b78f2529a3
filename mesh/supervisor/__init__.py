"""Process supervision: etcd and service instances as child processes, for meshctl and tests."""

from mesh.state import InstanceRecord, MeshState, clear_state, read_state, write_state
from mesh.supervisor._etcd_server import EtcdServer
from mesh.supervisor._health import check_health
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._process import find_binary, free_port, log_tail, relative_path, stop_process
from mesh.supervisor._status import InstanceStatus, mesh_status
from mesh.supervisor._supervisor import MeshAlreadyRunning, Supervisor

__all__ = [
    "EtcdServer",
    "InstanceProcess",
    "InstanceRecord",
    "InstanceStatus",
    "MeshAlreadyRunning",
    "MeshState",
    "Supervisor",
    "check_health",
    "clear_state",
    "find_binary",
    "free_port",
    "log_tail",
    "mesh_status",
    "read_state",
    "relative_path",
    "stop_process",
    "write_state",
]
