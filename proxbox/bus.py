"""In-process pub/sub for run frames: publish never awaits, every subscriber has a bounded buffer.

:meth:`EventBus.publish` encodes an envelope **once** (through the codec's ``encode``) and appends the same
:class:`~proxbox.frames.Frame` object to the buffer of every subscriber of that run (and of every ``"*"``
subscriber). It is a plain synchronous call: it never waits for a consumer.

A subscriber whose buffer already holds ``limit`` frames when a new one arrives has fallen behind: it is
*dropped* (removed from the bus, its buffer released, its ``on_drop`` callback scheduled with a reason) while
every other subscriber is unaffected. Frames are never dropped or coalesced for a live subscriber, so a
subscriber sees a gapless ``seq`` sequence or is cut off; ``error`` and ``complete`` frames are never lost
to a subscriber that keeps up. The transport closes a dropped watcher's socket with 1013 (try again later);
the client can resume with ``since=<last seq>``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

from proxbox.events import Envelope
from proxbox.frames import Frame
from proxbox.logsetup import get_logger

log = get_logger(__name__)

ALL: Final = "*"  # subscribe to every run's frames (status pages, metrics)


class SubscriberDropped(Exception):
    """Raised by :meth:`Subscription.get` once the bus has cut the subscriber off."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """One consumer's bounded view of a topic. Read with ``await get()`` or ``async for batch in sub``."""

    __slots__ = ("_buffer", "_bus", "_ended", "_waiter", "dropped", "limit", "on_drop", "topic")

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        limit: int,
        on_drop: Callable[[Subscription, str], None] | None = None,
    ) -> None:
        self._bus = bus
        self.topic = topic
        self.limit = limit
        self.on_drop = on_drop
        self._buffer: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.dropped: str | None = None  # the reason, once dropped

    def __repr__(self) -> str:
        return f"<Subscription {self.topic} buffered={len(self._buffer)} dropped={self.dropped!r}>"

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def active(self) -> bool:
        return self.dropped is None and not self._ended

    # -- producer side (called by the bus, never awaits)

    def _push(self, frame: Frame) -> bool:
        if len(self._buffer) >= self.limit:
            return False
        self._buffer.append(frame)
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop(self, reason: str) -> None:
        self.dropped = reason
        self._buffer.clear()
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    # -- consumer side

    async def get(self) -> list[Frame]:
        """Every frame buffered so far (at least one), oldest first.

        Returns ``[]`` once the topic has ended and the buffer is empty; raises :class:`SubscriberDropped`
        once the subscriber was cut off.
        """
        while True:
            if self.dropped is not None:
                raise SubscriberDropped(self.dropped)
            if self._buffer:
                batch = list(self._buffer)
                self._buffer.clear()
                return batch
            if self._ended:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[Frame]:
        batch = await self.get()
        if not batch:
            raise StopAsyncIteration
        return batch

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self._bus.unsubscribe(self)
        self._end()


class EventBus:
    """Topic (run id) → subscribers. ``encode`` turns an envelope into the shared frame."""

    def __init__(
        self,
        encode: Callable[[Envelope], Frame],
        *,
        default_limit: int = 2000,
        on_drop: Callable[[Subscription, str], None] | None = None,
    ) -> None:
        self._encode = encode
        self._default_limit = default_limit
        self._topics: dict[str, list[Subscription]] = {}
        self._on_drop = on_drop  # bus-wide observer (metrics); per-subscription callbacks come first
        self.published = 0
        self.dropped = 0

    def subscribe(
        self,
        topic: str,
        *,
        limit: int | None = None,
        on_drop: Callable[[Subscription, str], None] | None = None,
    ) -> Subscription:
        sub = Subscription(self, topic, limit or self._default_limit, on_drop)
        self._topics.setdefault(topic, []).append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is None:
            return
        try:
            subs.remove(sub)
        except ValueError:
            return
        if not subs:
            del self._topics[sub.topic]

    def subscribers(self, topic: str | None = None) -> int:
        if topic is None:
            return sum(len(s) for s in self._topics.values())
        return len(self._topics.get(topic, ()))

    def iter_subscriptions(self, topic: str) -> Iterator[Subscription]:
        return iter(tuple(self._topics.get(topic, ())))

    def publish(self, env: Envelope) -> Frame:
        """Encode once and fan out without waiting. Returns the frame (the run keeps it in its log)."""
        frame = self._encode(env)
        self.published += 1
        for topic in (env.run_id, ALL):
            subs = self._topics.get(topic)
            if not subs:
                continue
            late: list[Subscription] | None = None
            for sub in subs:
                if not sub._push(frame):
                    late = late or []
                    late.append(sub)
            if late:
                for sub in late:
                    self._cut_off(sub, f"fell {sub.limit} frames behind at seq {frame.seq}")
        return frame

    def end(self, topic: str) -> None:
        """The topic is over (its run completed): subscribers drain what is buffered, then stop."""
        for sub in self._topics.pop(topic, ()):
            sub._end()

    def _cut_off(self, sub: Subscription, reason: str) -> None:
        self.unsubscribe(sub)
        sub._drop(reason)
        self.dropped += 1
        log.warning("bus.subscriber_dropped", topic=sub.topic, reason=reason)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): run the callbacks right away
            loop = None
        for cb in (sub.on_drop, self._on_drop):
            if cb is None:
                continue
            if loop is not None:
                loop.call_soon(_safe_call, cb, sub, reason)
            else:
                _safe_call(cb, sub, reason)


def _safe_call(cb: Callable[[Subscription, str], None], sub: Subscription, reason: str) -> None:
    try:
        cb(sub, reason)
    except Exception:  # an observer's bug must not hurt the bus
        log.exception("bus.drop_callback_failed", topic=sub.topic)
