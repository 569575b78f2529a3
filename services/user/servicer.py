"""UserService over gRPC: decode the request, check who may act on the user, run the
command through the store, encode.

Every method validates its fields before anything else (services.user.domain), then
checks the caller: a call through the edge acts for the edge's end user, who may act
only on themselves (another user's id is NOT_FOUND, as if it did not exist; the edge
without a user is UNAUTHENTICATED); mesh identities act on any user. Failures are
raised as mesh.problems exceptions (and StaleVersion); the mesh server interceptor
turns them into statuses with details. Appends run in worker threads, since they may
wait for another instance's write lock; reads run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from mesh.problems import NotFound, Unauthenticated
from mesh.server import Caller
from services.common.eventstore import StoredEvent
from services.user import domain
from services.user.domain import User, UserStatus
from services.user.store import UserStore, event_message

__all__ = ["UserServicer", "encode_user", "encode_user_event"]

log = logging.getLogger("services.user")

Context = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {
    UserStatus.ACTIVE: user_pb2.USER_STATUS_ACTIVE,
    UserStatus.DEACTIVATED: user_pb2.USER_STATUS_DEACTIVATED,
}


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """Users, stored as event streams in a UserStore.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
        on_appended: called on the event loop after a command appended events (the
            outbox relay's `notify`, so they are published at once).
    """

    def __init__(
        self,
        store: UserStore,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
        on_appended: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._caller_of = caller_of
        self._on_appended = on_appended

    def _may_act_on(self, context: Context, user_id: str) -> None:
        """Refuse a call through the edge for anyone but its end user.

        Raises:
            Unauthenticated: the edge calls without a user (no token was checked).
            NotFound: the edge's user is another user.
        """
        caller = self._caller_of(context)
        if not caller.via_edge:
            return
        if caller.user is None:
            raise Unauthenticated("users need a signed-in user: send a bearer token")
        if caller.user != user_id:
            raise NotFound(domain.USER, user_id)

    async def _execute(self, context: Context, command: domain.Command) -> tuple[User, int]:
        self._may_act_on(context, command.user_id)
        done = await asyncio.to_thread(self._store.run, command)
        if done.appended:
            self._on_appended()
        return done.user, done.version

    async def RegisterUser(
        self, request: user_pb2.RegisterUserRequest, context: Context
    ) -> user_pb2.RegisterUserResponse:
        command = domain.validate_register(
            request.user_id, request.username, request.email, request.display_name
        )
        user, version = await self._execute(context, command)
        if version == 1:
            log.info("user registered", extra={"user_id": user.user_id})
        return user_pb2.RegisterUserResponse(user=encode_user(user), version=version)

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: Context
    ) -> user_pb2.GetUserResponse:
        user_id = domain.validate_user_id(request.user_id)
        self._may_act_on(context, user_id)
        user, version = self._store.load(user_id)
        if user is None:
            raise NotFound(domain.USER, user_id)
        return user_pb2.GetUserResponse(user=encode_user(user), version=version)

    async def ChangeEmail(
        self, request: user_pb2.ChangeEmailRequest, context: Context
    ) -> user_pb2.ChangeEmailResponse:
        command = domain.validate_change_email(
            request.user_id, request.email, request.expected_version
        )
        user, version = await self._execute(context, command)
        return user_pb2.ChangeEmailResponse(user=encode_user(user), version=version)

    async def ChangeDisplayName(
        self, request: user_pb2.ChangeDisplayNameRequest, context: Context
    ) -> user_pb2.ChangeDisplayNameResponse:
        command = domain.validate_change_display_name(
            request.user_id, request.display_name, request.expected_version
        )
        user, version = await self._execute(context, command)
        return user_pb2.ChangeDisplayNameResponse(user=encode_user(user), version=version)

    async def DeactivateUser(
        self, request: user_pb2.DeactivateUserRequest, context: Context
    ) -> user_pb2.DeactivateUserResponse:
        command = domain.validate_deactivate(
            request.user_id, request.reason, request.expected_version
        )
        user, version = await self._execute(context, command)
        log.info("user deactivated", extra={"user_id": user.user_id, "version": version})
        return user_pb2.DeactivateUserResponse(user=encode_user(user), version=version)

    async def ListUserEvents(
        self, request: user_pb2.ListUserEventsRequest, context: Context
    ) -> user_pb2.ListUserEventsResponse:
        page = domain.validate_list_events(request.user_id, request.from_version, request.page_size)
        self._may_act_on(context, page.user_id)
        # NOTE: the event store reads a stream to its end; a user's stream is short.
        events = self._store.history(page.user_id, page.from_version)
        version = events[-1].version if events else self._store.version(page.user_id)
        if version == 0:
            raise NotFound(domain.USER, page.user_id)
        shown = events[: page.size]
        return user_pb2.ListUserEventsResponse(
            events=[encode_user_event(event) for event in shown],
            next_from_version=shown[-1].version + 1 if len(events) > len(shown) else 0,
            version=version,
        )


def encode_user(user: User) -> user_pb2.User:
    return user_pb2.User(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        status=_STATUSES[user.status],
        deactivation_reason=user.deactivation_reason,
    )


def encode_user_event(event: StoredEvent) -> user_pb2.UserEvent:
    """A stored (and upcast) event with its payload as JSON: a Struct reads as plain
    JSON in grpcurl, the edge and any client, needing none of events.proto (an Any
    would need its type in each reader's descriptor pool)."""
    recorded_at = timestamp_pb2.Timestamp()
    recorded_at.FromNanoseconds(event.recorded_at)
    data = struct_pb2.Struct()
    data.update(
        json_format.MessageToDict(event_message(event), always_print_fields_with_no_presence=True)
    )
    return user_pb2.UserEvent(
        version=event.version,
        type=event.type,
        schema_version=event.schema_version,
        recorded_at=recorded_at,
        data=data,
        event_id=event.event_id,
    )
