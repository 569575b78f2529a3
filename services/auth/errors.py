"""Auth's own failure, beside the shared ones of mesh.problems: the mesh server
interceptor turns it into its status like any other Problem."""

from __future__ import annotations

import grpc

from mesh.problems import Problem

__all__ = ["BAD_CREDENTIALS", "BadCredentials"]

BAD_CREDENTIALS = "wrong username or password"
"""The one message of a failed login, whatever failed."""


class BadCredentials(Problem):
    """UNAUTHENTICATED: no user has this username, or the password is not theirs. The
    two are told apart neither by the message nor by the time taken."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self) -> None:
        super().__init__(BAD_CREDENTIALS)
