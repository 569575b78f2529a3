"""Server bootstrap every service shares: `run_service` in a service's __main__, and
the sidecar (an Envoy per instance) it runs with `dataplane: sidecar`."""

from mesh.server._caller import Caller, CallerOf
from mesh.server._envoy import EnvoyProcess
from mesh.server._faults import FaultInjector
from mesh.server._interceptor import MeshInterceptor, Registrar
from mesh.server._runtime import InstanceSettings, Runtime, run_service, serve
from mesh.server._sidecar import Sidecar, SidecarSockets

__all__ = [
    "Caller",
    "CallerOf",
    "EnvoyProcess",
    "FaultInjector",
    "InstanceSettings",
    "MeshInterceptor",
    "Registrar",
    "Runtime",
    "Sidecar",
    "SidecarSockets",
    "run_service",
    "serve",
]
