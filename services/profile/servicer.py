"""ProfileService over gRPC: validate the request, hand it to the query or command
side, encode.

Reads (GetProfile, ListProfiles, GetProjectionStatus) go to ProfileQueries, the one
change on request (RebuildProjection) to ProfileCommands: the read model itself is
written only by its projection of the user service's events. Profiles are public, so
reads need no particular caller; RebuildProjection is for the admin identity only.
Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.profile.v1 import profile_pb2, profile_pb2_grpc

from mesh.config import ADMIN_IDENTITY
from mesh.problems import PermissionDenied
from mesh.server import Caller
from services.common.paging import page_token
from services.profile import domain
from services.profile.commands import ProfileCommands
from services.profile.domain import Profile
from services.profile.queries import ProfileQueries

__all__ = ["ProfileServicer", "encode_profile"]

Context = grpc.aio.ServicerContext[Any, Any]


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    """Public profiles, read through `queries` and rebuilt through `commands`.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
    """

    def __init__(
        self,
        queries: ProfileQueries,
        commands: ProfileCommands,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
    ) -> None:
        self._queries = queries
        self._commands = commands
        self._caller_of = caller_of

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: Context
    ) -> profile_pb2.GetProfileResponse:
        user_id = domain.validate_user_id(request.user_id)
        return profile_pb2.GetProfileResponse(
            profile=encode_profile(self._queries.profile(user_id))
        )

    async def ListProfiles(
        self, request: profile_pb2.ListProfilesRequest, context: Context
    ) -> profile_pb2.ListProfilesResponse:
        query = domain.validate_list(request.page_size, request.page_token, request.active_only)
        page = self._queries.profiles(query)
        return profile_pb2.ListProfilesResponse(
            profiles=[encode_profile(profile) for profile in page.profiles],
            next_page_token=page_token(domain.PAGE_KIND, page.next_after)
            if page.next_after
            else "",
        )

    async def GetProjectionStatus(
        self, request: profile_pb2.GetProjectionStatusRequest, context: Context
    ) -> profile_pb2.GetProjectionStatusResponse:
        status = await self._queries.status()
        return profile_pb2.GetProjectionStatusResponse(
            events_behind=status.events_behind,
            seconds_behind=status.seconds_behind,
            events_applied=status.events_applied,
        )

    async def RebuildProjection(
        self, request: profile_pb2.RebuildProjectionRequest, context: Context
    ) -> profile_pb2.RebuildProjectionResponse:
        if self._caller_of(context).identity != ADMIN_IDENTITY:
            raise PermissionDenied("RebuildProjection is for the admin identity only")
        applied = await self._commands.rebuild()
        return profile_pb2.RebuildProjectionResponse(events_applied=applied)


def encode_profile(profile: Profile) -> profile_pb2.Profile:
    return profile_pb2.Profile(
        user_id=profile.user_id,
        username=profile.username,
        display_name=profile.display_name,
        active=profile.active,
        member_since=_timestamp(profile.member_since),
        updated=_timestamp(profile.updated),
        version=profile.version,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp
