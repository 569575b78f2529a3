"""AuditService over gRPC: validate the query, read the log, encode.

Who may query is mesh.yaml's authz business: admin only (the edge may not). Failures
are raised as mesh.problems exceptions; the mesh server interceptor turns them into
statuses with details.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from shop.audit.v1 import audit_pb2, audit_pb2_grpc

from services.audit import domain
from services.audit.store import AuditStore, Entry

__all__ = ["AuditServicer", "encode_entry"]

Context = grpc.aio.ServicerContext[Any, Any]


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """Queries of the log in an AuditStore."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def QueryAuditLog(
        self, request: audit_pb2.QueryAuditLogRequest, context: Context
    ) -> audit_pb2.QueryAuditLogResponse:
        query = domain.parse_query(
            stream=request.stream,
            topic=request.topic,
            event_type=request.type,
            since=request.since if request.HasField("since") else None,
            until=request.until if request.HasField("until") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        entries, cursor = self._store.query(query)
        return audit_pb2.QueryAuditLogResponse(
            entries=[encode_entry(entry) for entry in entries],
            next_page_token="" if cursor is None else domain.encode_page_token(cursor),
        )


def encode_entry(entry: Entry) -> audit_pb2.AuditEntry:
    message = audit_pb2.AuditEntry(
        position=entry.position,
        event_id=entry.event_id,
        topic=entry.topic,
        stream=entry.stream,
        version=entry.version,
        type=entry.type,
        occurred_at=_timestamp(entry.occurred_at_ns),
        recorded_at=_timestamp(entry.recorded_at_ns),
        payload=entry.payload,
    )
    if entry.payload_json:
        data = struct_pb2.Struct()
        data.update(json.loads(entry.payload_json))
        message.data.CopyFrom(data)
    return message


def _timestamp(time_ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp
