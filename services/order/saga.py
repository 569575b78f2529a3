"""The saga of an order: reserve_stock, charge_payment, create_shipment, each undone in
reverse (cancel the shipment, refund, release the stock) when a later step fails.

`OrderSaga.drive` moves one PENDING order on from whatever its stored state says, one
transition at a time, each written (services.order.store `advance`) before the next
call, while the driver holds the saga's lease: PlaceOrder drives a new order, a resumer
(services.order.resumer) one whose driver died or stopped. So a driver that dies leaves
an order that says what may have happened, and the next one carries on from there.

Every call is idempotent with a key derived from the order, so a step tried again (by
a retry, or by the next driver) never reserves, charges or ships twice: stock by order
id, `<order_id>.charge`, `<order_id>.ship`, `<order_id>.refund`, a shipment cancelled by
its id.

A step's outcome is one of:
- done: the next step runs (after the last, the order is CONFIRMED);
- refused (FailedPrecondition, InvalidArgument: stock short, payment declined, shipment
  refused): the step is FAILED, the done steps are undone in reverse and the order is
  CANCELLED; the refusal is what PlaceOrder answers;
- unknown (anything else: a dependency UNAVAILABLE or past its deadline after the mesh
  client's retries): the step stays PENDING and the driver stops, to be tried again
  `retry_delay` later; after `max_attempts` tries or `give_up_after` seconds since the
  order was placed, the step is ABANDONED (it may have happened) and the saga is undone,
  that step first: its call is repeated with its key to learn whether it happened (the
  key makes that safe), and what happened is undone.
An undoing that is refused, or stays unknown for `max_attempts` tries, leaves its step
COMPENSATION_FAILED (logged as an error, for someone to look at) and the undoing goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from mesh.problems import (
    DependencyFailed,
    FailedPrecondition,
    InvalidArgument,
    Problem,
    bounded,
)
from services.order import domain
from services.order.clients import Inventory, Payments, Shipping
from services.order.domain import (
    CHARGE_PAYMENT,
    CREATE_SHIPMENT,
    MAX_DETAIL,
    RESERVE_STOCK,
    Order,
    OrderStatus,
    SagaStep,
    StepStatus,
)
from services.order.store import LeaseLost, OrderStore

__all__ = [
    "OrderCancelled",
    "OrderPending",
    "OrderSaga",
    "Outcome",
    "SagaPolicy",
    "charge_key",
    "refund_key",
    "shipment_key",
]

log = logging.getLogger("services.order")

_REFUSED = (FailedPrecondition, InvalidArgument)
_UNDONE = frozenset({StepStatus.DONE, StepStatus.ABANDONED})  # what undoing looks for
_BACKWARD = frozenset(
    {
        StepStatus.FAILED,
        StepStatus.ABANDONED,
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATION_FAILED,
    }
)


def charge_key(order_id: str) -> str:
    return f"{order_id}.charge"


def shipment_key(order_id: str) -> str:
    return f"{order_id}.ship"


def refund_key(order_id: str) -> str:
    return f"{order_id}.refund"


@dataclass(frozen=True)
class SagaPolicy:
    """The pace of a saga (services.order.settings.SagaSettings says what each is)."""

    lease: float = 30.0
    step_timeout: float = 10.0
    retry_delay: float = 5.0
    max_attempts: int = 5
    give_up_after: float = 600.0


@dataclass(frozen=True)
class Outcome:
    """Where a drive left an order: final, or PENDING (`unknown` says why it stopped;
    `lost`: another driver took the saga over). `refusal` is the step's refusal that
    cancelled it, if this drive saw it."""

    order: Order
    refusal: Problem | None = None
    unknown: BaseException | None = None
    lost: bool = False


def _order_info(order_id: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ResourceInfo(resource_type=domain.ORDER, resource_name=order_id))
    return packed


class OrderCancelled(FailedPrecondition):
    """PlaceOrder's answer for an order its saga cancelled: the refusing step's status
    (FAILED_PRECONDITION, or INVALID_ARGUMENT for an address the carrier refused) and
    details, plus a ResourceInfo naming the order."""

    def __init__(self, order_id: str, refusal: Problem) -> None:
        self.order_id = order_id
        self.refusal = refusal
        self.code = refusal.code
        super().__init__(
            f"order {order_id} was cancelled: {refusal.message}",
            getattr(refusal, "violations", ()) if isinstance(refusal, FailedPrecondition) else (),
        )

    def details(self) -> list[any_pb2.Any]:
        return [*self.refusal.details(), _order_info(self.order_id)]


class OrderPending(DependencyFailed):
    """PlaceOrder's answer for an order whose saga stopped at a step of unknown outcome:
    the dependency's code, ErrorInfo DEPENDENCY_FAILED (with `order_id`), and a
    ResourceInfo naming the order, which the service finishes in the background."""

    def __init__(self, order_id: str, code: grpc.StatusCode, details: str) -> None:
        self.order_id = order_id
        super().__init__(code, f"{details}; order {order_id} is PENDING and will be finished")
        self.metadata["order_id"] = order_id

    def details(self) -> list[any_pb2.Any]:
        return [*super().details(), _order_info(self.order_id)]


class OrderSaga:
    """Drives orders' sagas against the four downstream services.

    Args:
        clock: the current time in nanoseconds since the epoch.
    """

    def __init__(
        self,
        store: OrderStore,
        inventory: Inventory,
        payments: Payments,
        shipping: Shipping,
        *,
        policy: SagaPolicy = SagaPolicy(),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._payments = payments
        self._shipping = shipping
        self.policy = policy
        self._clock = clock

    def lease_until(self, now_ns: int) -> int:
        return now_ns + int(self.policy.lease * 1e9)

    async def drive(self, order_id: str, owner: str) -> Outcome:
        """Move the saga of `order_id`, whose lease `owner` holds, on until the order is
        final or a step's outcome is unknown (or the lease is lost)."""
        order = self._store.get(order_id)
        if order is None:
            raise LookupError(order_id)
        refusal: Problem | None = None
        try:
            while order.status is OrderStatus.PENDING:
                if any(step.status in _BACKWARD for step in order.saga):
                    undo = [step for step in order.saga if step.status in _UNDONE]
                    if not undo:
                        order = await self._write(order, owner, status=OrderStatus.CANCELLED)
                        log.info(
                            "order cancelled",
                            extra={"order_id": order_id, "reason": order.failure_reason},
                        )
                        break
                    order, unknown = await self._undo(order, undo[-1], owner)
                else:
                    todo = [step for step in order.saga if step.status is StepStatus.PENDING]
                    if not todo:
                        order = await self._write(order, owner, status=OrderStatus.CONFIRMED)
                        log.info("order confirmed", extra={"order_id": order_id})
                        break
                    order, unknown, refused = await self._do(order, todo[0], owner)
                    refusal = refused or refusal
                if unknown is not None:
                    return Outcome(order, refusal, unknown=unknown)
        except LeaseLost:
            latest = self._store.get(order_id)
            return Outcome(latest or order, refusal, lost=True)
        if order.status is OrderStatus.CANCELLED and refusal is None:
            refusal = FailedPrecondition(order.failure_reason or "the order was cancelled")
        return Outcome(order, refusal)

    async def _write(
        self,
        order: Order,
        owner: str,
        step: SagaStep | None = None,
        *,
        lease_ns: int | None = None,
        **changes: Any,
    ) -> Order:
        now = self._clock()
        return await asyncio.to_thread(
            self._store.advance,
            order.order_id,
            owner=owner,
            lease_until_ns=self.lease_until(now) if lease_ns is None else lease_ns,
            step=step,
            **changes,
        )

    def _retry_at(self) -> int:
        return self._clock() + int(self.policy.retry_delay * 1e9)

    async def _do(
        self, order: Order, step: SagaStep, owner: str
    ) -> tuple[Order, BaseException | None, Problem | None]:
        """Try one step: (the order as written, why its outcome is unknown if it is, the
        refusal if it was refused)."""
        now = self._clock()
        step = replace(step, attempts=step.attempts + 1, update_time_ns=now)
        order = await self._write(order, owner, step)
        try:
            found = await self._forward(order, step.name)
        except _REFUSED as refused:
            failed = replace(step, status=StepStatus.FAILED, detail=_detail(refused.message))
            reason = _detail(f"{step.name}: {refused.message}")
            return await self._write(order, owner, failed, failure_reason=reason), None, refused
        except Exception as error:
            return await self._unknown(order, step, owner, error)
        done = replace(step, status=StepStatus.DONE, detail="", update_time_ns=self._clock())
        return await self._write(order, owner, done, **found), None, None

    async def _forward(self, order: Order, name: str) -> dict[str, Any]:
        """Make the step called `name` happen; the order's columns it sets."""
        if name == RESERVE_STOCK:
            await self._inventory.reserve(order.order_id, order.lines)
            return {}
        if name == CHARGE_PAYMENT:
            payment_id = await self._payments.charge(
                order.order_id, order.customer_id, order.total, charge_key(order.order_id)
            )
            return {"payment_id": payment_id}
        if name == CREATE_SHIPMENT:
            address = order.address or domain.DEFAULT_ADDRESS
            shipment_id = await self._shipping.create(
                order.order_id, address, order.lines, shipment_key(order.order_id)
            )
            return {"shipment_id": shipment_id}
        raise ValueError(f"no saga step {name!r}")

    async def _unknown(
        self, order: Order, step: SagaStep, owner: str, error: Exception
    ) -> tuple[Order, BaseException | None, Problem | None]:
        seconds = (self._clock() - order.create_time_ns) / 1e9
        why = describe(error)
        if step.attempts >= self.policy.max_attempts or seconds >= self.policy.give_up_after:
            log.warning(
                "giving up on a saga step of unknown outcome",
                extra={"order_id": order.order_id, "step": step.name, "attempts": step.attempts},
            )
            abandoned = replace(
                step,
                status=StepStatus.ABANDONED,
                detail=_detail(f"outcome unknown after {step.attempts} attempts: {why}"),
            )
            reason = _detail(f"{step.name}: no answer after {step.attempts} attempts ({why})")
            return await self._write(order, owner, abandoned, failure_reason=reason), None, None
        pending = replace(step, detail=_detail(f"outcome unknown: {why}"))
        order = await self._write(order, owner, pending, lease_ns=self._retry_at())
        return order, error, None

    async def _undo(
        self, order: Order, step: SagaStep, owner: str
    ) -> tuple[Order, BaseException | None]:
        """Undo one step (DONE or ABANDONED): (the order as written, why the undoing's
        outcome is unknown if it is)."""
        step = replace(step, undo_attempts=step.undo_attempts + 1, update_time_ns=self._clock())
        order = await self._write(order, owner, step)
        found: dict[str, Any] = {}
        try:
            if step.status is StepStatus.ABANDONED and step.name != RESERVE_STOCK:
                found = await self._forward(order, step.name)  # did it happen? the key says
                order = await self._write(order, owner, **found)
            await self._backward(order, step.name)
        except _REFUSED as refused:
            if found or step.status is StepStatus.DONE:  # refused to undo what happened
                return await self._undo_failed(order, step, owner, refused.message), None
            never = replace(step, status=StepStatus.FAILED, detail=_detail(
                f"{step.detail}; it never happened: {refused.message}"
            ))  # fmt: skip
            return await self._write(order, owner, never), None
        except Exception as error:
            if step.undo_attempts >= self.policy.max_attempts:
                why = f"not undone after {step.undo_attempts} attempts: {describe(error)}"
                return await self._undo_failed(order, step, owner, why), None
            waiting = replace(step, detail=_detail(f"undoing, outcome unknown: {describe(error)}"))
            return await self._write(order, owner, waiting, lease_ns=self._retry_at()), error
        undone = replace(
            step,
            status=StepStatus.COMPENSATED,
            detail=_detail(f"undone: {order.failure_reason}"),
            update_time_ns=self._clock(),
        )
        return await self._write(order, owner, undone), None

    async def _undo_failed(self, order: Order, step: SagaStep, owner: str, why: str) -> Order:
        log.error(
            "a saga step could not be undone: it needs a person",
            extra={"order_id": order.order_id, "step": step.name, "why": why},
        )
        failed = replace(step, status=StepStatus.COMPENSATION_FAILED, detail=_detail(why))
        return await self._write(order, owner, failed)

    async def _backward(self, order: Order, name: str) -> None:
        """Undo the step called `name`, which happened (or may have, for stock)."""
        if name == RESERVE_STOCK:
            await self._inventory.release(order.order_id)
        elif name == CHARGE_PAYMENT:
            await self._payments.refund(order.payment_id, refund_key(order.order_id))
        elif name == CREATE_SHIPMENT:
            await self._shipping.cancel(order.shipment_id)
        else:
            raise ValueError(f"no saga step {name!r}")


def describe(error: BaseException) -> str:
    """A short account of a failure of unknown outcome, for a step's detail."""
    if isinstance(error, grpc.aio.AioRpcError):
        return bounded(f"{error.code().name}: {error.details() or ''}", MAX_DETAIL)
    if isinstance(error, Problem):
        return bounded(f"{error.code.name}: {error.message}", MAX_DETAIL)
    return bounded(f"{type(error).__name__}: {error}", MAX_DETAIL)


def _detail(text: str) -> str:
    return bounded(text, MAX_DETAIL)
