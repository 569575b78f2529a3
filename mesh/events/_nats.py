"""The EventBus on NATS JetStream (nats-py).

One stream (SHOP, subjects `shop.>`, file storage) holds every topic: topic `orders` is
subject `shop.orders`. A publish waits for the stream's acknowledgement, so a returned
publish is stored; its `Nats-Msg-Id` is the event's id, and the stream drops a message
whose id it stored within its dedupe window. A consumer of a topic is a durable pull
consumer with explicit acks, named `<consumer>_<topic>` (dots as '_': a consumer may
follow several topics).

NOTE: every consumer has max_ack_pending=1: the stream hands out the next event only
once the previous one is acknowledged. That is what keeps a consumer's events in order
while a handler fails and its event waits out a backoff (otherwise later events would
pass it), and across several subscriptions of one consumer (a service's instances):
one event at a time, whoever handles it. The price is one event per round trip and
consumer; the partition of a topic by stream that would lift it comes later.

The connection reconnects for ever (nats-py: max_reconnect_attempts=-1). While it is
down nothing is buffered (pending_size=0): a publish raises BrokerUnavailable at once,
or after `publish_timeout` if the broker vanished mid-request, and is never sent later
behind the caller's back. Subscriptions poll again once it is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from mesh.backoff import Backoff
from mesh.errors import BrokerUnavailable
from mesh.events._bus import Subscription
from mesh.events._codec import OCCURRED_AT, decode_event, encode_event
from mesh.events._model import Backlog, Event, Handler, check_consumer, check_topic
from mesh.tasks import cancel_and_wait

__all__ = ["NatsEventBus"]

log = logging.getLogger("mesh.events")

STREAM = "SHOP"
SUBJECT_PREFIX = "shop"
PUBLISH_TIMEOUT = 2.0
"""Seconds a publish (and any JetStream API request) waits for the broker's answer."""
CONNECT_TIMEOUT = 5.0
"""Seconds `connect()` keeps trying before it raises BrokerUnavailable."""
RECONNECT_WAIT = 0.25
"""Seconds between attempts to reach a broker that went away."""
ACK_WAIT = 30.0
"""Seconds the broker waits for an event's acknowledgement before it delivers the
event again (a consumer that died with it); a running handler keeps extending it."""
FETCH_WAIT = 1.0
"""Seconds one poll for the next event waits; also how long `Subscription.aclose()`
may wait for the poll in flight."""
DUPLICATE_WINDOW = 120.0
"""Seconds the stream remembers an event id to drop a republished one (JetStream's
default); consumers still dedupe by id, for republishing after that."""
HISTORY_BATCH = 256
"""Events one fetch of `history()` asks for."""
RETRY_BACKOFF = Backoff(initial=0.5, maximum=30.0)
"""Delay before an event whose handler raised is delivered again, by its attempt."""


def _server_url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"nats://{endpoint}"


def _durable_name(topic: str, consumer: str) -> str:
    # '_' is in neither a topic nor a consumer name: distinct pairs, distinct names.
    return f"{consumer}_{topic.replace('.', '_')}"


class NatsEventBus:
    """An EventBus on one NATS server; make one with `connect()`."""

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        *,
        stream: str,
        publish_timeout: float,
        ack_wait: float,
        fetch_wait: float,
        retry_backoff: Backoff,
    ) -> None:
        self._client = client
        self._js = js
        self._stream = stream
        self._publish_timeout = publish_timeout
        self._ack_wait = ack_wait
        self._fetch_wait = fetch_wait
        self._retry_backoff = retry_backoff
        self._subscriptions: set[_NatsSubscription] = set()

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        *,
        stream: str = STREAM,
        publish_timeout: float = PUBLISH_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_wait: float = RECONNECT_WAIT,
        ack_wait: float = ACK_WAIT,
        fetch_wait: float = FETCH_WAIT,
        duplicate_window: float = DUPLICATE_WINDOW,
        retry_backoff: Backoff = RETRY_BACKOFF,
        name: str | None = None,
    ) -> NatsEventBus:
        """Connect to the NATS server at `endpoint` (host:port or a nats:// URL) and
        create the stream if it is missing (file storage, subjects `shop.>`).

        Args:
            stream: the JetStream stream's name.
            publish_timeout: seconds a publish waits for the broker's acknowledgement.
            connect_timeout: seconds to keep trying to reach the broker at first.
            reconnect_wait: seconds between attempts to reach it again after it left.
            ack_wait: seconds the broker waits for a handler before delivering again.
            fetch_wait: seconds one poll of a subscription waits for an event.
            duplicate_window: seconds the stream drops a republished event id (when
                it creates the stream).
            retry_backoff: the delay before an event whose handler raised comes again.
            name: the connection's name in the server's monitoring.

        Raises:
            BrokerUnavailable: no JetStream server answered within `connect_timeout`.
        """
        client = Client()
        last_error: collections.deque[Exception] = collections.deque(maxlen=1)  # one per attempt

        async def error_cb(error: Exception) -> None:
            last_error.append(error)
            log.debug("event broker %s: %r", endpoint, error)

        async def disconnected_cb() -> None:
            if not client.is_closed:  # not our own aclose()
                log.warning("event broker %s: disconnected, reconnecting", endpoint)

        async def reconnected_cb() -> None:
            log.info("event broker %s: reconnected", endpoint)

        # NOTE: nats-py annotates the two waits as int, but takes seconds as floats.
        options: dict[str, Any] = {
            "servers": [_server_url(endpoint)],
            "name": name,
            "connect_timeout": min(connect_timeout, 2.0),
            "reconnect_time_wait": reconnect_wait,
            "max_reconnect_attempts": -1,
            "pending_size": 0,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
        }
        try:
            async with asyncio.timeout(connect_timeout):
                await client.connect(**options)
                js = client.jetstream(timeout=publish_timeout)
                await _ensure_stream(js, stream, duplicate_window)
        except (TimeoutError, OSError, nats.errors.Error) as error:
            await client.close()
            cause = last_error[0] if isinstance(error, TimeoutError) and last_error else error
            raise BrokerUnavailable(
                f"no JetStream broker at {endpoint} within {connect_timeout:g}s: {cause!r}"
            ) from error
        return cls(
            client,
            js,
            stream=stream,
            publish_timeout=publish_timeout,
            ack_wait=ack_wait,
            fetch_wait=fetch_wait,
            retry_backoff=retry_backoff,
        )

    async def publish(self, topic: str, event: Event) -> None:
        subject = f"{SUBJECT_PREFIX}.{check_topic(topic)}"
        headers, payload = encode_event(event)
        try:
            await self._js.publish(
                subject,
                payload,
                timeout=self._publish_timeout,
                stream=self._stream,
                headers=headers,
            )
        except nats.errors.Error as error:
            raise BrokerUnavailable(
                f"event {event.id} to {topic}: not acknowledged: {error!r}"
            ) from error

    async def subscribe(self, topic: str, consumer: str, handler: Handler) -> Subscription:
        subject = f"{SUBJECT_PREFIX}.{check_topic(topic)}"
        durable = _durable_name(topic, check_consumer(consumer))
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=1,  # order: see the module's note
            max_deliver=-1,
        )
        try:
            # Creates the consumer, or updates it to this config (create-or-update).
            await self._js.add_consumer(self._stream, config)
            pull = await self._js.pull_subscribe_bind(durable=durable, stream=self._stream)
        except nats.errors.Error as error:
            raise BrokerUnavailable(f"consumer {consumer} of {topic}: {error!r}") from error
        subscription = _NatsSubscription(
            pull,
            handler,
            name=f"{consumer} on {topic}",
            fetch_wait=self._fetch_wait,
            ack_wait=self._ack_wait,
            ack_timeout=self._publish_timeout,
            retry_backoff=self._retry_backoff,
            closed=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription

    async def history(self, topic: str | None = None) -> list[Event]:
        subject = f"{SUBJECT_PREFIX}.{check_topic(topic) if topic else '>'}"
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,  # the broker drops it if this read dies midway
        )
        events: list[Event] = []
        try:
            reader = await self._js.pull_subscribe(subject, stream=self._stream, config=config)
            try:
                # What was stored when the reader was made: read exactly that much.
                remaining = (await reader.consumer_info()).num_pending or 0
                while remaining > 0:
                    batch = await reader.fetch(min(remaining, HISTORY_BATCH), timeout=5.0)
                    remaining -= len(batch)
                    for message in batch:
                        with contextlib.suppress(ValueError):  # a message that is no event
                            events.append(decode_event(message.headers, message.data))
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await reader.unsubscribe()
        except nats.errors.Error as error:
            raise BrokerUnavailable(f"history of {topic or 'every topic'}: {error!r}") from error
        return events

    async def backlog(self, topic: str, consumer: str) -> Backlog:
        subject = f"{SUBJECT_PREFIX}.{check_topic(topic)}"
        durable = _durable_name(topic, check_consumer(consumer))
        try:
            try:
                info = await self._js.consumer_info(self._stream, durable)
                behind = (info.num_pending or 0) + (info.num_ack_pending or 0)
            except nats.js.errors.NotFoundError:  # never subscribed: all of the topic
                stream = await self._js.stream_info(self._stream, subjects_filter=subject)
                behind = sum((stream.state.subjects or {}).values())
            try:
                newest = await self._js.get_last_msg(self._stream, subject)
            except nats.js.errors.NotFoundError:
                return Backlog(events=behind, newest_at=None)
        except nats.errors.Error as error:
            raise BrokerUnavailable(f"backlog of {consumer} on {topic}: {error!r}") from error
        occurred_at = (newest.headers or {}).get(OCCURRED_AT)
        return Backlog(events=behind, newest_at=float(occurred_at) if occurred_at else None)

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in list(self._subscriptions)))
        await self._client.close()

    async def __aenter__(self) -> NatsEventBus:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def _ensure_stream(js: JetStreamContext, stream: str, duplicate_window: float) -> None:
    try:
        await js.stream_info(stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=stream,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(stream)  # another process created it meanwhile: fine if so


class _NatsSubscription:
    """One task that polls the consumer for its next event and runs the handler, for
    as long as the subscription is open. `aclose()` gives a running handler up to
    fetch_wait + 5 s to finish, then cancels it (its event goes back to the broker)."""

    def __init__(
        self,
        pull: JetStreamContext.PullSubscription,
        handler: Handler,
        *,
        name: str,
        fetch_wait: float,
        ack_wait: float,
        ack_timeout: float,
        retry_backoff: Backoff,
        closed: Callable[[_NatsSubscription], None],
    ) -> None:
        self._pull = pull
        self._handler = handler
        self._name = name
        self._fetch_wait = fetch_wait
        self._ack_wait = ack_wait
        self._ack_timeout = ack_timeout
        self._retry_backoff = retry_backoff
        self._closed = closed
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"subscription {name}")

    async def aclose(self) -> None:
        if self._task.done() and self._closing.is_set():
            return
        self._closing.set()
        # The poll in flight ends within fetch_wait: cancelling it instead could drop
        # an event that was on its way (unacknowledged, it would wait out ack_wait).
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._fetch_wait + 5.0)
        except TimeoutError:
            await cancel_and_wait(self._task)  # a handler that would not finish
        with contextlib.suppress(nats.errors.Error):
            await self._pull.unsubscribe()
        self._closed(self)

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                messages = await self._pull.fetch(1, timeout=self._fetch_wait)
            except nats.errors.TimeoutError:
                continue  # nothing new
            except Exception as error:  # the broker is away (nats-py reconnects), or worse
                away = isinstance(error, nats.errors.OutboundBufferLimitError)
                log.log(
                    logging.DEBUG if away else logging.WARNING,
                    "subscription %s: polling failed: %r",
                    self._name,
                    error,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._fetch_wait)
                continue
            for message in messages:
                if self._closing.is_set():
                    await self._settle(message.nak())  # back to the broker, at once
                else:
                    await self._deliver(message)

    async def _deliver(self, message: Msg) -> None:
        try:
            event = decode_event(message.headers, message.data)
        except ValueError as error:
            log.warning(
                "subscription %s: dropped a message that is no event: %s", self._name, error
            )
            await self._settle(message.term())
            return
        keepalive = asyncio.create_task(self._in_progress(message))
        try:
            await self._handler(event)
        except asyncio.CancelledError:
            await self._settle(message.nak())
            raise
        except Exception:
            attempt = message.metadata.num_delivered or 1
            delay = self._retry_backoff.delay(attempt - 1)
            log.exception(
                "subscription %s: handler failed on event %s (delivery %d); again in %.2fs",
                self._name,
                event.id,
                attempt,
                delay,
            )
            await self._settle(message.nak(delay=delay))
        else:
            # Confirmed before the next poll or aclose(): a subscriber that restarts right
            # after does not get the event again, and an ack lost in an outage is logged
            # (the event then comes again after ack_wait).
            await self._settle(message.ack_sync(timeout=self._ack_timeout))
        finally:
            await cancel_and_wait(keepalive)

    async def _in_progress(self, message: Msg) -> None:
        """While the handler runs, tell the broker so every third of ack_wait."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            await self._settle(message.in_progress())

    async def _settle(self, reply: Awaitable[object]) -> None:
        """Send an ack, nak, term or progress reply; if the broker cannot take it, the
        event comes again after ack_wait, which at-least-once allows."""
        try:
            await reply
        except nats.errors.Error as error:
            log.warning("subscription %s: the broker missed a reply: %r", self._name, error)
