"""NotificationService over gRPC: decode the request, check whose notifications the
caller may read, read the store, encode.

Calls through the edge act for its end user (mesh.server.Caller), who reads only their
own notifications: no user is UNAUTHENTICATED, another user's id PERMISSION_DENIED.
Mesh identities (admin) read anyone's; mesh.yaml's authz decides who may call at all.

A watch sends what is newer than its cursor, then sleeps until the instance's bell
rings (services.notification.changes) and reads again, until the call's deadline
cancels it.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns them
into statuses with details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.notification.v1 import notification_pb2, notification_pb2_grpc

from mesh.problems import PermissionDenied, Unauthenticated
from mesh.server import Caller
from services.notification import domain
from services.notification.changes import Changes
from services.notification.domain import Notification
from services.notification.store import NotificationStore

__all__ = ["WATCH_BATCH", "NotificationServicer", "encode_notification"]

Context = grpc.aio.ServicerContext[Any, Any]

WATCH_BATCH = 100
"""Notifications a watch reads at a time (it reads again at once after a full batch)."""


class NotificationServicer(notification_pb2_grpc.NotificationServiceServicer):
    """Notifications from a NotificationStore; watches woken by `changes`.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
    """

    def __init__(
        self,
        store: NotificationStore,
        changes: Changes,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
    ) -> None:
        self._store = store
        self._changes = changes
        self._caller_of = caller_of

    async def ListNotifications(
        self, request: notification_pb2.ListNotificationsRequest, context: Context
    ) -> notification_pb2.ListNotificationsResponse:
        page = domain.parse_list_request(request.user_id, request.page_size, request.page_token)
        self._check_reader(context, page.user_id)
        found, cursor = self._store.page(page.user_id, before=page.before, limit=page.size)
        return notification_pb2.ListNotificationsResponse(
            notifications=[encode_notification(notification) for notification in found],
            next_page_token="" if cursor is None else domain.encode_page_token(cursor),
        )

    async def WatchNotifications(
        self, request: notification_pb2.WatchNotificationsRequest, context: Context
    ) -> AsyncIterator[notification_pb2.WatchNotificationsResponse]:
        watch = domain.parse_watch_request(request.user_id, request.after)
        self._check_reader(context, watch.user_id)
        cursor = self._store.newest_seq() if watch.after is None else watch.after
        while True:
            ticket = self._changes.ticket()  # before reading: see Changes.ticket
            batch = self._store.after(watch.user_id, cursor, limit=WATCH_BATCH)
            for notification in batch:
                yield notification_pb2.WatchNotificationsResponse(
                    notification=encode_notification(notification)
                )
                cursor = notification.seq
            if len(batch) < WATCH_BATCH:
                await ticket.wait()

    def _check_reader(self, context: Context, user_id: str) -> None:
        """Raise unless the caller may read `user_id`'s notifications.

        Raises:
            Unauthenticated: the edge calls without a user (no token was checked).
            PermissionDenied: the edge's user is another user.
        """
        caller = self._caller_of(context)
        if not caller.via_edge:
            return
        if caller.user is None:
            raise Unauthenticated("notifications need a signed-in user: send a bearer token")
        if caller.user != user_id:
            raise PermissionDenied("a signed-in user may read only their own notifications")


def encode_notification(notification: Notification) -> notification_pb2.Notification:
    created = timestamp_pb2.Timestamp()
    created.FromNanoseconds(notification.create_time_ns)
    return notification_pb2.Notification(
        notification_id=notification.notification_id,
        user_id=notification.user_id,
        text=notification.text,
        event_type=notification.event_type,
        create_time=created,
    )
