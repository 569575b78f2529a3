"""User's own failure, beside the shared ones of mesh.problems: the mesh server
interceptor turns it into its status like any other Problem."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from mesh.problems import ERROR_DOMAIN
from services.common.eventstore import VersionConflict

__all__ = ["VERSION_CONFLICT", "StaleVersion"]

VERSION_CONFLICT = "VERSION_CONFLICT"
"""ErrorInfo reason of a change decided on a version the user is no longer at."""


class StaleVersion(VersionConflict):
    """ABORTED: the user is not at the version the change was decided on (another
    change came first). The message says the current version, and so does the status's
    google.rpc.ErrorInfo (reason VERSION_CONFLICT, metadata `user_id`,
    `expected_version` and `current_version`), for programs: read the user again,
    decide again, and retry with the version read."""

    def __init__(self, user_id: str, stream: str, expected_version: int, current_version: int):
        self.user_id = user_id
        super().__init__(stream, expected_version, current_version)

    @property
    def current_version(self) -> int:
        return self.actual_version

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=VERSION_CONFLICT,
            domain=ERROR_DOMAIN,
            metadata={
                "user_id": self.user_id,
                "expected_version": str(self.expected_version),
                "current_version": str(self.actual_version),
            },
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]
