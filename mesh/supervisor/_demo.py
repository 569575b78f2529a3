"""`meshctl demo`: the shop's story told through the REST edge, as any client would: a
user registers and logs in, browses the catalog, places an order that goes through and
one that the payment service declines (its saga releases the stock it reserved), then
reads what the shop told them.

Every call carries a W3C `traceparent` with the sampled flag, so each step's whole
trace (edge, order, inventory, payment, shipping) is recorded under the trace id the
step prints: `grep <trace id> .mesh/traces/*.jsonl`, or an OTLP collector's UI.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from mesh.errors import MeshError
from mesh.supervisor._token import fetch_token

__all__ = ["DemoError", "DemoStep", "run_demo"]

_TIMEOUT = 15.0
_CATALOG_WAIT = 15.0
"""Seconds the catalog may take to show the products (it is built from events)."""
_ADDRESS = {
    "name": "Ada Lovelace",
    "street": "12 St James's Square",
    "city": "London",
    "postalCode": "SW1Y 4JH",
    "country": "GB",
}


class DemoError(MeshError):
    """A step of the demo did not go as the shop promises."""


@dataclass(frozen=True)
class DemoStep:
    """One step: what was done, what came back, and the trace to look it up by."""

    title: str
    outcome: str
    trace_id: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "outcome": self.outcome,
            "trace_id": self.trace_id,
            "details": self.details,
        }


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]
    trace_id: str


class _Edge:
    """Calls to the edge, each starting a sampled trace of its own."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.token = ""
        self.username = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> _Reply:
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        if body is not None:
            headers["content-type"] = "application/json"
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                return _Reply(response.status, _json(response.read()), trace_id)
        except urllib.error.HTTPError as error:
            return _Reply(error.code, _json(error.read()), trace_id)
        except (urllib.error.URLError, OSError) as error:
            raise DemoError(f"cannot reach the edge at {self.url}: {error}") from error


def run_demo(
    edge_url: str,
    *,
    state_dir: Path,
    card_limit: str | None,
    report: Callable[[DemoStep], None],
) -> list[DemoStep]:
    """Run the demo against the edge at `edge_url`, calling `report` after each step.

    `card_limit` is payment's `decline.over` ("500.00 USD"): the declined order is
    placed just past it (skipped, and said so, if the mesh sets none).

    Raises:
        DemoError: a step failed in a way the shop does not promise.
    """
    edge = _Edge(edge_url)
    steps: list[DemoStep] = []

    def done(step: DemoStep) -> None:
        steps.append(step)
        report(step)

    done(_sign_up(edge, state_dir))
    done(_create_profile(edge))
    browse, items = _browse(edge)
    done(browse)
    done(_order_that_succeeds(edge, items))
    done(_order_that_is_declined(edge, items, card_limit))
    done(_notifications(edge))
    return steps


def _sign_up(edge: _Edge, state_dir: Path) -> DemoStep:
    username = f"demo-{secrets.token_hex(3)}"
    try:
        edge.token = fetch_token(edge.url, username, password=None, state_dir=state_dir)
        edge.username = username
    except MeshError as error:
        raise DemoError(f"register and log in: {error}") from error
    return DemoStep(
        "register and log in",
        f"{username} is user {_subject(edge.token)}; their password is in "
        f"{state_dir / 'users.json'} (`meshctl token {username}` logs in again)",
        "",
        {"username": username, "user_id": _subject(edge.token)},
    )


def _create_profile(edge: _Edge) -> DemoStep:
    user_id = _subject(edge.token)
    body = {
        "userId": user_id,
        "username": edge.username,
        "email": f"{user_id}@example.com",
        "displayName": "Ada Lovelace",
    }
    reply = edge.call("POST", "/v1/users", body)
    _expect(reply, 200, "create the user's account")
    return DemoStep(
        "create the user's account (user service, event-sourced)",
        f"version {reply.body.get('version', '?')} of stream user-{user_id}"
        f" (`meshctl events user-{user_id}`)",
        reply.trace_id,
    )


def _browse(edge: _Edge) -> tuple[DemoStep, list[dict[str, Any]]]:
    deadline = time.monotonic() + _CATALOG_WAIT
    while True:
        reply = edge.call("GET", "/v1/catalog?inStockOnly=true&pageSize=20")
        _expect(reply, 200, "browse the catalog")
        items: list[dict[str, Any]] = reply.body.get("items", [])
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the read model is still catching up with the events
    if not items:
        raise DemoError("the catalog shows nothing in stock: are product and inventory up?")
    listing = ", ".join(f"{i.get('name')} ({_price(i.get('price'))})" for i in items[:5])
    return DemoStep("browse the catalog (CQRS read model)", listing, reply.trace_id), items


def _order_that_succeeds(edge: _Edge, items: list[dict[str, Any]]) -> DemoStep:
    cheapest = min(items, key=lambda item: _amount(item.get("price")))
    reply = edge.call("POST", "/v1/orders", _order(cheapest["productId"], 1))
    _expect(reply, 200, "place an order")
    order = reply.body.get("order", {})
    return DemoStep(
        "place an order (saga: reserve stock, charge, ship)",
        f"{order.get('orderId')} {order.get('status')}, {_price(order.get('total'))}: "
        + _saga(order),
        reply.trace_id,
        {"order_id": order.get("orderId"), "status": order.get("status")},
    )


def _order_that_is_declined(
    edge: _Edge, items: list[dict[str, Any]], card_limit: str | None
) -> DemoStep:
    title = "place an order over the card limit (payment declines; the saga compensates)"
    if card_limit is None:
        return DemoStep(title, "skipped: payment's decline.over is not set in mesh.yaml", "")
    limit = Decimal(card_limit.split()[0])
    dearest = max(items, key=lambda item: _amount(item.get("price")))
    quantity = int(limit // _amount(dearest.get("price"))) + 1
    reply = edge.call("POST", "/v1/orders", _order(dearest["productId"], quantity))
    if reply.status == 200:
        raise DemoError(f"an order of more than {card_limit} went through: {reply.body}")
    order_id = _failed_order(reply.body)
    if order_id is None:
        raise DemoError(f"the declined order's answer names no order: {reply.body}")
    found = edge.call("GET", f"/v1/orders/{urllib.parse.quote(order_id)}")
    _expect(found, 200, "read the declined order")
    order = found.body.get("order", {})
    return DemoStep(
        title,
        f"HTTP {reply.status}: {reply.body.get('message')}; {order_id} {order.get('status')}: "
        + _saga(order),
        reply.trace_id,
        {"order_id": order_id, "status": order.get("status")},
    )


def _notifications(edge: _Edge) -> DemoStep:
    user_id = _subject(edge.token)
    deadline = time.monotonic() + _CATALOG_WAIT
    while True:  # they come from events: give them a moment
        reply = edge.call("GET", f"/v1/users/{user_id}/notifications")
        _expect(reply, 200, "read the user's notifications")
        found: list[dict[str, Any]] = reply.body.get("notifications", [])
        if len(found) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    texts = "; ".join(str(n.get("text", n.get("message", ""))) for n in found) or "none yet"
    return DemoStep("what the shop told the user (notification service)", texts, reply.trace_id)


def _order(product_id: str, quantity: int) -> dict[str, Any]:
    return {
        "items": [{"productId": product_id, "quantity": str(quantity)}],
        "shippingAddress": _ADDRESS,
        "requestId": f"demo-{secrets.token_hex(6)}",
    }


def _expect(reply: _Reply, status: int, what: str) -> None:
    if reply.status != status:
        raise DemoError(f"{what}: HTTP {reply.status}: {reply.body.get('message', reply.body)}")


def _failed_order(body: dict[str, Any]) -> str | None:
    for detail in body.get("details", []):
        if str(detail.get("@type", "")).endswith("ResourceInfo"):
            name = detail.get("resourceName")
            return str(name) if name else None
    return None


def _saga(order: dict[str, Any]) -> str:
    steps = order.get("saga", [])
    return ", ".join(
        f"{s.get('name')} {str(s.get('status', '')).removeprefix('SAGA_STEP_STATUS_')}"
        for s in steps
    )


def _amount(money: Any) -> Decimal:
    if not isinstance(money, dict):
        return Decimal(0)
    return Decimal(str(money.get("units", 0))) + Decimal(money.get("nanos", 0)) / 10**9


def _price(money: Any) -> str:
    code = money.get("currencyCode", "") if isinstance(money, dict) else ""
    return f"{_amount(money):.2f} {code}".strip()


def _claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified: the demo only shows them (the edge verifies)."""
    try:
        payload = token.split(".")[1]
        found = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise DemoError(f"the login answer is not a JWT: {error}") from error
    return found if isinstance(found, dict) else {}


def _subject(token: str) -> str:
    return str(_claims(token).get("sub", ""))


def _json(raw: bytes) -> dict[str, Any]:
    try:
        found = json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}
    return found if isinstance(found, dict) else {"message": str(found)[:200]}
