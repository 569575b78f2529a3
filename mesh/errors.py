"""Errors the mesh runtime raises. Branch on the types and their fields, never on the text.

    MeshError
    ├── ConfigError              mesh.yaml or a flag is wrong; names the key
    ├── IdentityError            a certificate or SPIFFE id is missing or invalid
    ├── RegistryUnavailable      etcd could not be reached or refused the request
    │   └── RevisionCompacted    a watch asked for history etcd no longer keeps
    ├── BrokerUnavailable        the event broker could not be reached, or did not
    │                            acknowledge a publish in time (mesh.events)
    ├── CallError                a call through the mesh client failed before reaching a server
    │   ├── NoEndpoints          no instance of the service is registered
    │   └── CircuitOpen          every candidate endpoint's breaker is open
    ├── CodegenError             (mesh.codegen) protoc failed, or an import is missing
    ├── DemoError                (mesh.supervisor) `meshctl demo`: a step did not go as
    │                            the shop promises
    ├── MeshAlreadyRunning       (mesh.supervisor) a mesh runs from this folder already
    ├── ProtocolError            (mesh.supervisor) the supervisor's control channel got
    │                            a line its protocol does not allow
    └── TokenError               (mesh.supervisor) `meshctl token`: the edge would not
                                 log the user in, or could not be reached

CallError is also a grpc.aio.AioRpcError with code UNAVAILABLE, so servicer code that
handles failed downstream calls handles these the same way. The failures a servicer
raises for its callers (mesh.problems) are not mesh errors: they are answers.
tests/unit/mesh/test_errors.py checks that this tree names every public one.
"""

from __future__ import annotations

import grpc
from grpc.aio import AioRpcError, Metadata

__all__ = [
    "BrokerUnavailable",
    "CallError",
    "CircuitOpen",
    "ConfigError",
    "IdentityError",
    "MeshError",
    "NoEndpoints",
    "RegistryUnavailable",
    "RevisionCompacted",
]


class MeshError(Exception):
    """Base of every error the mesh runtime raises."""


class ConfigError(MeshError):
    """The configuration is invalid. `key` is the dotted path of the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class IdentityError(MeshError):
    """A certificate, key or SPIFFE id is missing, malformed or does not chain to the CA."""


class RegistryUnavailable(MeshError):
    """etcd could not serve a registry request."""


class BrokerUnavailable(MeshError):
    """The event broker could not serve a request: a publish it did not acknowledge in
    time (which it may still have stored: publishing the same event again is safe), a
    subscription it could not set up, or no broker known at all."""


class RevisionCompacted(RegistryUnavailable):
    """A watch started below etcd's compaction point; list again and watch from there."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revision compacted below {compact_revision}")


class CallError(MeshError, AioRpcError):
    """A mesh client call that failed before any server saw it (code UNAVAILABLE)."""

    def __init__(self, service: str, message: str) -> None:
        self.service = service
        AioRpcError.__init__(
            self,
            code=grpc.StatusCode.UNAVAILABLE,
            initial_metadata=Metadata(),
            trailing_metadata=Metadata(),
            details=message,
        )

    def __str__(self) -> str:
        return f"{self.service}: {self.details()}"


class NoEndpoints(CallError):
    """No instance of `service` is registered, or none arrived before the deadline."""

    def __init__(self, service: str) -> None:
        super().__init__(service, f"no endpoint of {service!r} is registered")


class CircuitOpen(CallError):
    """Every endpoint of `service` has an open breaker; the soonest retries in `retry_after` s."""

    def __init__(self, service: str, endpoint: str, retry_after: float) -> None:
        self.endpoint = endpoint
        self.retry_after = retry_after
        super().__init__(
            service,
            f"circuit open for every endpoint of {service!r} "
            f"(next trial on {endpoint} in {retry_after:.2f}s)",
        )
