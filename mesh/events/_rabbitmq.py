"""The EventBus on RabbitMQ (3.9 or later: stream queues), over AMQP 0-9-1 with aiormq.

What lives on the broker:

- `shop.events`, a durable topic exchange: a publish goes to it with the topic as its
  routing key, in confirm mode, so a returned publish is stored in every stream below.
- `shop.topic.<topic>`, one stream queue per topic: its replayable log. A consumer
  reads it from any offset (`x-stream-offset`), which is what gives a consumer that
  subscribes late every event "from the first", and `history(topic)`.
- `shop.every-topic`, a stream bound with `#`: every event of every topic, in the order
  the broker stored them, for `history()` of every topic (streams cannot be listed over
  AMQP 0-9-1).
- per consumer of a topic, `shop.lease.<consumer>.<topic>`, an empty classic queue, and
  `shop.cursor.<consumer>.<topic>`, a small stream. A stream keeps no per-consumer
  position over AMQP 0-9-1, so the consumer's position (the offset of the first event it
  has not handled) is appended to its cursor stream after each event, and read back
  from the stream's last entry. Only one subscription of a consumer reads at a time:
  the one whose exclusive consume of the lease queue the broker accepted. The others
  try again every `takeover_wait`, and one of them takes over, from the cursor, when
  the reader closes or its connection dies (the broker then drops its consumer). That
  is what keeps a consumer's events one at a time and in order across a service's
  instances, and while a failing handler's event waits out its backoff.

NOTE: reading a stream "to its end" (history, backlog, a cursor) needs the end, which
AMQP 0-9-1 does not tell: queue.declare's message count lags by seconds. A reader
instead relies on how RabbitMQ feeds a stream consumer from the channel's own process:
deliveries that an ack lets out are sent before the channel answers its next method,
and the first batch before a second consume on the same stream is answered (that
consume asks the stream's writer process for a reader, which the writer answers only
after it has told the channel there is data). So a reader consumes, then consumes
again and cancels (a barrier), and asks for more by acking a full batch followed by
basic.qos (another barrier); fewer deliveries than its prefetch mean it reached the
end as the broker had it.

Dedupe: a stream has no dedupe window like JetStream's. Every reader of a topic drops
an event whose id one of the topic's previous `dedupe_window` messages had (so every
consumer and history() drop the same ones); a republished event that comes later than
that is delivered again, which at least once allows.

The connection is re-established for ever while the bus is open. While it is down a
publish, subscribe, history or backlog raises BrokerUnavailable at once (nothing is
buffered), or after `publish_timeout` if the broker vanished mid-request;
subscriptions take their consumer over again once it is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiormq
import aiormq.exceptions
from aiormq.abc import AbstractChannel, AbstractConnection, ArgumentsType, DeliveredMessage

from mesh.backoff import Backoff
from mesh.errors import BrokerUnavailable
from mesh.events._bus import Subscription
from mesh.events._codec import MSG_ID, OCCURRED_AT, decode_event, encode_event
from mesh.events._model import Backlog, Event, Handler, check_consumer, check_topic
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["RabbitMqEventBus"]

log = logging.getLogger("mesh.events")

EXCHANGE = "shop.events"
EVERY_TOPIC = "shop.every-topic"
PUBLISH_TIMEOUT = 2.0
"""Seconds a publish (and any other single request) waits for the broker's answer."""
CONNECT_TIMEOUT = 5.0
"""Seconds `connect()` keeps trying before it raises BrokerUnavailable."""
RECONNECT_WAIT = 0.25
"""Seconds between attempts to reach a broker that went away."""
TAKEOVER_WAIT = 1.0
"""Seconds between a waiting subscription's attempts to take its consumer over (and
so, at most, how long events wait after the reading subscription closed)."""
CLOSE_GRACE = 5.0
"""Seconds `Subscription.aclose()` lets a running handler finish before cancelling it."""
DEDUPE_WINDOW = 1024
"""Messages back in a topic that a republished event id is looked for, to drop it."""
PREFETCH = 64
"""Events a subscription's reader may have received ahead of its handler."""
READ_BATCH = 256
"""Messages one round trip of history() or backlog() asks for."""
RETRY_BACKOFF = Backoff(initial=0.5, maximum=30.0)
"""Delay before an event whose handler raised is handed to it again, by its attempt."""

_STREAM: ArgumentsType = {"x-queue-type": "stream"}
_CURSOR_STREAM: ArgumentsType = {
    **_STREAM,
    # Only the last entry matters: keep a few small segments, not a growing log.
    "x-max-length-bytes": 2_000_000,
    "x-stream-max-segment-size-bytes": 500_000,
}
_OFFSET = "x-stream-offset"
_PERSISTENT = 2
_MAX_NAME = 255  # AMQP short strings: queue names and routing keys
_BROKER_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)
"""What aiormq raises when the broker is away, refuses a request or does not answer."""


def _broker_url(endpoint: str) -> str:
    # host:port means the broker's default user, which RabbitMQ lets in from loopback
    # only; anything else gives its credentials in an amqp:// or amqps:// URL.
    return endpoint if "://" in endpoint else f"amqp://guest:guest@{endpoint}/"


def _short(name: str) -> str:
    """`name`, or if it is longer than AMQP allows a queue name or routing key (a topic
    can be), a prefix of it with a digest of the whole."""
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[:190]}~{hashlib.sha256(name.encode()).hexdigest()}"


def _topic_stream(topic: str) -> str:
    return _short(f"shop.topic.{topic}")


@dataclass(frozen=True)
class _ConsumerQueues:
    """The broker's names for one consumer of one topic. A consumer name has no dots, so
    "<consumer>.<topic>" names distinct pairs distinctly."""

    topic: str
    routing_key: str
    stream: str
    lease: str
    cursor: str

    @classmethod
    def of(cls, topic: str, consumer: str) -> _ConsumerQueues:
        return cls(
            topic=topic,
            routing_key=_short(topic),
            stream=_topic_stream(topic),
            lease=_short(f"shop.lease.{consumer}.{topic}"),
            cursor=_short(f"shop.cursor.{consumer}.{topic}"),
        )


def _encode(event: Event) -> tuple[aiormq.spec.Basic.Properties, bytes]:
    """The properties and body that carry `event`: the id as the message id, the other
    fields as the same headers the NATS adapter uses, `data` as the body."""
    headers, payload = encode_event(event)
    del headers[MSG_ID]
    properties = aiormq.spec.Basic.Properties(
        message_id=event.id,
        headers=dict(headers),
        delivery_mode=_PERSISTENT,
        content_type="application/x-protobuf",
    )
    return properties, payload


def _decode(message: DeliveredMessage) -> Event:
    """The Event `message` carries; ValueError if it carries none."""
    properties = message.header.properties
    fields = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in (properties.headers or {}).items()
        if isinstance(value, str | bytes)
    }
    if properties.message_id:
        fields[MSG_ID] = properties.message_id
    return decode_event(fields, message.body)


def _offset(message: DeliveredMessage) -> int:
    offset = (message.header.properties.headers or {})[_OFFSET]
    assert isinstance(offset, int), f"{_OFFSET} is {offset!r}"
    return offset


class _RecentIds:
    """The ids of the last `size` messages of a topic, to tell a republished event."""

    def __init__(self, size: int) -> None:
        self._order: collections.deque[str | None] = collections.deque()
        self._counts: collections.Counter[str] = collections.Counter()
        self._size = size

    def observe(self, event_id: str | None) -> bool:
        """Whether `event_id` is among the last `size` observed; then observe it (None:
        a message that is no event, which takes its place in the window all the same)."""
        seen = event_id is not None and self._counts[event_id] > 0
        self._order.append(event_id)
        if event_id is not None:
            self._counts[event_id] += 1
        if len(self._order) > self._size:
            dropped = self._order.popleft()
            if dropped is not None:
                self._counts[dropped] -= 1
                if not self._counts[dropped]:
                    del self._counts[dropped]
        return seen


def _event_or_none(message: DeliveredMessage) -> Event | None:
    try:
        return _decode(message)
    except ValueError:
        return None


async def _ignore(_: DeliveredMessage) -> None:
    return None


async def _close_quietly(closable: AbstractChannel | AbstractConnection | None) -> None:
    if closable is None:
        return
    with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await closable.close()


class _Link:
    """The bus's one connection to the broker, re-established for ever while the bus is
    open, and a confirm-mode channel on it that publishes share."""

    def __init__(self, url: str, *, endpoint: str, name: str | None, reconnect_wait: float) -> None:
        self._url = url
        self._endpoint = endpoint
        self._properties: ArgumentsType = {"connection_name": name} if name else {}
        self._reconnect_wait = reconnect_wait
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._publisher_lock = asyncio.Lock()
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None
        self.generation = 0
        """Counts connections made; what a cached declaration is valid for."""

    async def open(self, timeout: float) -> None:
        """Connect, trying again until `timeout`; then keep it connected."""
        until = time.monotonic() + timeout
        while True:
            try:
                async with asyncio.timeout(max(until - time.monotonic(), 0.01)):
                    await self._connect()
                break
            except _BROKER_ERRORS as error:
                if time.monotonic() + self._reconnect_wait >= until:
                    raise BrokerUnavailable(
                        f"no RabbitMQ broker at {self._endpoint} within {timeout:g}s: {error!r}"
                    ) from error
            await asyncio.sleep(self._reconnect_wait)
        self._watcher = start_background(self._keep_connected(), f"rabbitmq {self._endpoint}")

    def connection(self) -> AbstractConnection:
        """The open connection; BrokerUnavailable while there is none."""
        connection = self._connection
        if connection is None or connection.is_closed:
            raise BrokerUnavailable(f"not connected to the RabbitMQ broker at {self._endpoint}")
        return connection

    async def channel(self) -> AbstractChannel:
        """A new channel without confirms (a failed request closes its channel, so each
        piece of work has its own)."""
        return await self.connection().channel(publisher_confirms=False, timeout=PUBLISH_TIMEOUT)

    async def publisher(self) -> AbstractChannel:
        """The shared confirm-mode channel, opened again if it was closed."""
        async with self._publisher_lock:
            channel = self._publisher
            if channel is None or channel.is_closed:
                channel = await self.connection().channel(
                    publisher_confirms=True, timeout=PUBLISH_TIMEOUT
                )
                self._publisher = channel
            return channel

    async def aclose(self) -> None:
        self._closed = True
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        await _close_quietly(self._connection)

    async def _connect(self) -> None:
        connection = aiormq.Connection(self._url, client_properties=self._properties)
        try:
            await connection.connect()
        except BaseException:
            await _close_quietly(connection)
            raise
        self._connection, self._publisher = connection, None
        self.generation += 1

    async def _keep_connected(self) -> None:
        while not self._closed:
            assert self._connection is not None
            await asyncio.wait({self._connection.closing})
            log.warning("event broker %s: disconnected, reconnecting", self._endpoint)
            while True:
                await asyncio.sleep(self._reconnect_wait)
                try:
                    async with asyncio.timeout(max(self._reconnect_wait, 2.0)):
                        await self._connect()
                except _BROKER_ERRORS as error:
                    log.debug("event broker %s: %r", self._endpoint, error)
                else:
                    log.info("event broker %s: reconnected", self._endpoint)
                    break


async def _read_stream(
    link: _Link, queue: str, start: int | str, *, batch: int, limit: int | None = None
) -> list[DeliveredMessage]:
    """The messages of stream `queue` from `start` (an offset, "first" or "last") to its
    end as the broker has it now (see the module's note), or its first `limit`; none if
    there is no such stream."""
    channel = await link.channel()
    received: list[DeliveredMessage] = []

    async def keep(message: DeliveredMessage) -> None:
        received.append(message)

    try:
        await channel.basic_qos(prefetch_count=batch, timeout=PUBLISH_TIMEOUT)
        try:
            await channel.basic_consume(
                queue, keep, arguments={_OFFSET: start}, timeout=PUBLISH_TIMEOUT
            )
        except aiormq.exceptions.ChannelNotFoundEntity:
            return []
        barrier = await channel.basic_consume(
            queue, _ignore, arguments={_OFFSET: "next"}, timeout=PUBLISH_TIMEOUT
        )
        assert barrier.consumer_tag is not None
        await channel.basic_cancel(barrier.consumer_tag, timeout=PUBLISH_TIMEOUT)
        await asyncio.sleep(0)  # let the consumer tasks of what arrived run
        handed = 0
        while len(received) - handed >= batch and (limit is None or len(received) < limit):
            handed = len(received)  # a full batch: there may be more
            tag = received[-1].delivery_tag
            assert tag is not None
            await channel.basic_ack(tag, multiple=True)
            await channel.basic_qos(prefetch_count=batch, timeout=PUBLISH_TIMEOUT)
            await asyncio.sleep(0)
    finally:
        await _close_quietly(channel)
    return received[:limit] if limit is not None else received


async def _read_cursor(link: _Link, queue: str) -> int | None:
    """The offset a consumer's cursor stream last recorded; None if it has none."""
    entries = await _read_stream(link, queue, "last", batch=READ_BATCH)
    return int(entries[-1].body) if entries else None


class RabbitMqEventBus:
    """An EventBus on one RabbitMQ broker; make one with `connect()`."""

    def __init__(
        self,
        link: _Link,
        *,
        publish_timeout: float,
        takeover_wait: float,
        close_grace: float,
        dedupe_window: int,
        retry_backoff: Backoff,
    ) -> None:
        self._link = link
        self._publish_timeout = publish_timeout
        self._takeover_wait = takeover_wait
        self._close_grace = close_grace
        self._dedupe_window = dedupe_window
        self._retry_backoff = retry_backoff
        self._declared: dict[str, int] = {}  # queue name: the link generation that saw it
        self._subscriptions: set[_RabbitMqSubscription] = set()

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        *,
        publish_timeout: float = PUBLISH_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_wait: float = RECONNECT_WAIT,
        takeover_wait: float = TAKEOVER_WAIT,
        close_grace: float = CLOSE_GRACE,
        dedupe_window: int = DEDUPE_WINDOW,
        retry_backoff: Backoff = RETRY_BACKOFF,
        name: str | None = None,
    ) -> RabbitMqEventBus:
        """Connect to the RabbitMQ broker at `endpoint` and declare the exchange and
        the stream of every topic if they are missing.

        Args:
            endpoint: host:port (as the broker's default user, which RabbitMQ only
                lets in over loopback) or an amqp:// or amqps:// URL with credentials.
            publish_timeout: seconds a publish, or any other request, waits for the
                broker's answer.
            connect_timeout: seconds to keep trying to reach the broker at first.
            reconnect_wait: seconds between attempts to reach it again after it left.
            takeover_wait: seconds between a waiting subscription's attempts to take
                its consumer over from the one reading.
            close_grace: seconds a closing subscription lets its handler finish.
            dedupe_window: messages back in a topic a republished event id is dropped.
            retry_backoff: the delay before an event whose handler raised comes again.
            name: the connection's name in the broker's management views.

        Raises:
            BrokerUnavailable: no broker answered within `connect_timeout`.
        """
        link = _Link(
            _broker_url(endpoint), endpoint=endpoint, name=name, reconnect_wait=reconnect_wait
        )
        await link.open(connect_timeout)
        try:
            async with asyncio.timeout(max(connect_timeout, publish_timeout)):
                await _declare_shared(link)
        except (BrokerUnavailable, *_BROKER_ERRORS) as error:
            await link.aclose()
            raise BrokerUnavailable(f"RabbitMQ broker at {endpoint}: {error!r}") from error
        return cls(
            link,
            publish_timeout=publish_timeout,
            takeover_wait=takeover_wait,
            close_grace=close_grace,
            dedupe_window=dedupe_window,
            retry_backoff=retry_backoff,
        )

    async def publish(self, topic: str, event: Event) -> None:
        check_topic(topic)
        properties, body = _encode(event)
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._declare_topic(topic)
                channel = await self._link.publisher()
                confirmation = await channel.basic_publish(
                    body, exchange=EXCHANGE, routing_key=_short(topic), properties=properties
                )
        except (BrokerUnavailable, *_BROKER_ERRORS) as error:
            raise BrokerUnavailable(
                f"event {event.id} to {topic}: not acknowledged: {error!r}"
            ) from error
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BrokerUnavailable(f"event {event.id} to {topic}: refused: {confirmation!r}")

    async def subscribe(self, topic: str, consumer: str, handler: Handler) -> Subscription:
        queues = _ConsumerQueues.of(check_topic(topic), check_consumer(consumer))
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._declare_topic(topic)
                await self._declare_consumer(queues)
        except (BrokerUnavailable, *_BROKER_ERRORS) as error:
            raise BrokerUnavailable(f"consumer {consumer} of {topic}: {error!r}") from error
        subscription = _RabbitMqSubscription(
            self._link,
            queues,
            handler,
            name=f"{consumer} on {topic}",
            takeover_wait=self._takeover_wait,
            close_grace=self._close_grace,
            request_timeout=self._publish_timeout,
            dedupe_window=self._dedupe_window,
            retry_backoff=self._retry_backoff,
            closed=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription

    async def history(self, topic: str | None = None) -> list[Event]:
        stream = _topic_stream(check_topic(topic)) if topic else EVERY_TOPIC
        try:
            messages = await _read_stream(self._link, stream, "first", batch=READ_BATCH)
        except (BrokerUnavailable, *_BROKER_ERRORS) as error:
            raise BrokerUnavailable(f"history of {topic or 'every topic'}: {error!r}") from error
        windows: dict[str | None, _RecentIds] = {}  # by routing key: a topic's own window
        events: list[Event] = []
        for message in messages:
            window = windows.setdefault(message.routing_key, _RecentIds(self._dedupe_window))
            event = _event_or_none(message)
            if not window.observe(event.id if event else None) and event is not None:
                events.append(event)
        return events

    async def backlog(self, topic: str, consumer: str) -> Backlog:
        queues = _ConsumerQueues.of(check_topic(topic), check_consumer(consumer))
        try:
            tail = await _read_stream(self._link, queues.stream, "last", batch=READ_BATCH)
            if not tail:
                return Backlog(events=0, newest_at=None)
            position = await _read_cursor(self._link, queues.cursor)
            if position is None:  # never subscribed: all of the topic
                first = await _read_stream(self._link, queues.stream, "first", batch=1, limit=1)
                position = _offset(first[0]) if first else 0
        except (BrokerUnavailable, *_BROKER_ERRORS) as error:
            raise BrokerUnavailable(f"backlog of {consumer} on {topic}: {error!r}") from error
        newest = tail[-1]
        occurred_at = (newest.header.properties.headers or {}).get(OCCURRED_AT)
        return Backlog(
            events=max(0, _offset(newest) + 1 - position),
            newest_at=float(occurred_at) if isinstance(occurred_at, str) else None,
        )

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in list(self._subscriptions)))
        await self._link.aclose()

    async def __aenter__(self) -> RabbitMqEventBus:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _declare_topic(self, topic: str) -> None:
        """The topic's stream, bound to the exchange: before the first publish to a
        topic, or the exchange would store the event in the every-topic stream only."""
        stream = _topic_stream(topic)
        if self._declared.get(stream) == self._link.generation:
            return
        channel = await self._link.channel()
        try:
            await channel.queue_declare(stream, durable=True, arguments=_STREAM)
            await channel.queue_bind(stream, EXCHANGE, routing_key=_short(topic))
        finally:
            await _close_quietly(channel)
        self._declared[stream] = self._link.generation

    async def _declare_consumer(self, queues: _ConsumerQueues) -> None:
        channel = await self._link.channel()
        try:
            await channel.queue_declare(queues.lease, durable=True)
            await channel.queue_declare(queues.cursor, durable=True, arguments=_CURSOR_STREAM)
        finally:
            await _close_quietly(channel)


async def _declare_shared(link: _Link) -> None:
    channel = await link.channel()
    try:
        await channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        await channel.queue_declare(EVERY_TOPIC, durable=True, arguments=_STREAM)
        await channel.queue_bind(EVERY_TOPIC, EXCHANGE, routing_key="#")
    finally:
        await _close_quietly(channel)


_Inbox = asyncio.Queue[DeliveredMessage | None]
"""What a subscription's reader received, in order; None: stop reading."""


class _RabbitMqSubscription:
    """One task that, for as long as the subscription is open, tries to take the
    consumer's lease and, once it holds it, reads the topic's stream from the consumer's
    cursor and runs the handler on each event. `aclose()` gives a running handler
    `close_grace` s to finish, then cancels it (its event is not recorded as handled)."""

    def __init__(
        self,
        link: _Link,
        queues: _ConsumerQueues,
        handler: Handler,
        *,
        name: str,
        takeover_wait: float,
        close_grace: float,
        request_timeout: float,
        dedupe_window: int,
        retry_backoff: Backoff,
        closed: Callable[[_RabbitMqSubscription], None],
    ) -> None:
        self._link = link
        self._queues = queues
        self._handler = handler
        self._name = name
        self._takeover_wait = takeover_wait
        self._close_grace = close_grace
        self._request_timeout = request_timeout
        self._dedupe_window = dedupe_window
        self._retry_backoff = retry_backoff
        self._closed = closed
        self._closing = asyncio.Event()
        self._inbox: _Inbox = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name=f"subscription {name}")

    async def aclose(self) -> None:
        if self._closing.is_set() and self._task.done():
            return
        self._closing.set()
        self._inbox.put_nowait(None)  # wakes a reader waiting for its next event
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._close_grace)
        except TimeoutError:
            await cancel_and_wait(self._task)  # a handler that would not finish
        self._closed(self)

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                await self._take_over_and_read()
            except (BrokerUnavailable, *_BROKER_ERRORS) as error:
                log.debug("subscription %s: %r", self._name, error)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our own aclose()
                log.debug("subscription %s: its channel was closed under it", self._name)
            except Exception:  # a bug: log it, and try again rather than stop delivering
                log.exception("subscription %s: reading failed", self._name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._takeover_wait)

    async def _take_over_and_read(self) -> None:
        """Read for the consumer if the broker lets this subscription hold its lease;
        return (to try again later) if another holds it, or once a channel closed."""
        lease = await self._link.channel()
        try:
            try:
                await lease.basic_consume(
                    self._queues.lease, _ignore, exclusive=True, timeout=self._request_timeout
                )
            except aiormq.exceptions.ChannelAccessRefused:
                return  # another subscription of the consumer reads
            await self._read(lease)
        finally:
            await _close_quietly(lease)

    async def _read(self, lease: AbstractChannel) -> None:
        position = await _read_cursor(self._link, self._queues.cursor)
        reader: AbstractChannel | None = None
        writer: AbstractChannel | None = None
        try:
            reader = await self._link.channel()
            writer = await self._link.connection().channel(
                publisher_confirms=True, timeout=self._request_timeout
            )
            self._inbox = inbox = _Inbox()
            for channel in (lease, reader, writer):
                channel.closing.add_done_callback(lambda _: inbox.put_nowait(None))
            await reader.basic_qos(prefetch_count=PREFETCH, timeout=self._request_timeout)
            # From a window back, so that its ids are known when the first new one comes.
            start = max(0, position - self._dedupe_window) if position is not None else "first"

            async def receive(message: DeliveredMessage) -> None:
                inbox.put_nowait(message)

            await reader.basic_consume(
                self._queues.stream,
                receive,
                arguments={_OFFSET: start},
                timeout=self._request_timeout,
            )
            recent = _RecentIds(self._dedupe_window)
            while not self._closing.is_set():
                message = await inbox.get()
                if message is None or lease.is_closed:
                    return  # closing, or a channel closed: start over
                await self._take(message, position, recent, reader, writer, lease)
        finally:
            await _close_quietly(writer)
            await _close_quietly(reader)

    async def _take(
        self,
        message: DeliveredMessage,
        position: int | None,
        recent: _RecentIds,
        reader: AbstractChannel,
        writer: AbstractChannel,
        lease: AbstractChannel,
    ) -> None:
        """Handle one message of the stream: skip what is before the cursor (read for
        the dedupe window only), a duplicate or a message that is no event; run the
        handler on the rest until it succeeds; record each step in the cursor."""
        offset = _offset(message)
        event = _event_or_none(message)
        duplicate = recent.observe(event.id if event else None)
        if position is None or offset >= position:
            if event is None:
                log.warning("subscription %s: skipped a message that is no event", self._name)
            elif not duplicate and not await self._handle(event, lease):
                return  # closing, or the lease was lost: the event stays unhandled
            await self._record(writer, offset + 1)
        tag = message.delivery_tag
        assert tag is not None
        await reader.basic_ack(tag)  # lets the stream send the next one

    async def _handle(self, event: Event, lease: AbstractChannel) -> bool:
        """Run the handler on `event` until it returns (True), retrying after a backoff;
        False if the subscription closes, or loses its lease, first."""
        attempt = 0
        while True:
            try:
                await self._handler(event)
                return True
            except Exception:
                delay = self._retry_backoff.delay(attempt)
                attempt += 1
                log.exception(
                    "subscription %s: handler failed on event %s (attempt %d); again in %.2fs",
                    self._name,
                    event.id,
                    attempt,
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            if self._closing.is_set() or lease.is_closed:
                return False

    async def _record(self, writer: AbstractChannel, position: int) -> None:
        """Append the consumer's new position to its cursor stream, confirmed: a
        subscriber that takes over right after starts from there."""
        confirmation = await writer.basic_publish(
            str(position).encode(),
            routing_key=self._queues.cursor,
            properties=aiormq.spec.Basic.Properties(delivery_mode=_PERSISTENT),
            timeout=self._request_timeout,
        )
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BrokerUnavailable(f"cursor of {self._name}: refused: {confirmation!r}")
