"""Notification's own failure, beside the shared ones of mesh.problems: the mesh server
interceptor turns it into its status like any other Problem."""

from __future__ import annotations

import grpc

from mesh.problems import Problem

__all__ = ["PermissionDenied"]


class PermissionDenied(Problem):
    """PERMISSION_DENIED: the signed-in user asked for another user's notifications.

    NOTE: unlike order, which answers NOT_FOUND for another customer's order (so that
    ids cannot be probed), a user id here names no secret resource: the caller knows
    whose notifications they asked for, and is told plainly that they are not theirs.
    """

    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self) -> None:
        super().__init__("a signed-in user may read only their own notifications")
