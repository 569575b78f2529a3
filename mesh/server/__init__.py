"""Server bootstrap every service shares: `run_service` in a service's __main__."""

from mesh.server._interceptor import MeshInterceptor, Registrar
from mesh.server._runtime import InstanceSettings, Runtime, run_service, serve

__all__ = ["InstanceSettings", "MeshInterceptor", "Registrar", "Runtime", "run_service", "serve"]
