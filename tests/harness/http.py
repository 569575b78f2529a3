"""A small HTTP/1.1 client for the edge's tests: one request, its status, headers and
body, from a thread (http.client), so the event loop that serves it keeps running."""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ", "."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch_sync(
    url: str,
    method: str = "GET",
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    source: str | None = None,
) -> Answer:
    """`source`: the client's own address (another loopback address, say 127.0.0.2)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname,
        parts.port,
        timeout=timeout,
        source_address=(source, 0) if source else None,
    )
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        payload = body.encode() if isinstance(body, str) else body
        connection.request(method, target, body=payload, headers=headers or {})
        response = connection.getresponse()
        found: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            found[key] = f"{found[key]}, {value}" if key in found else value
        return Answer(response.status, found, response.read())
    finally:
        connection.close()


async def fetch(
    url: str,
    method: str = "GET",
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    source: str | None = None,
) -> Answer:
    return await asyncio.to_thread(fetch_sync, url, method, body, headers, timeout, source)
