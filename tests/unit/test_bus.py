from __future__ import annotations

import asyncio
import inspect

import pytest

from proxbox.bus import ALL, EventBus, SubscriberDropped
from proxbox.events import Envelope, Note
from proxbox.frames import Frame, make_codec


def env(seq: int, run_id: str = "r1") -> Envelope:
    return Envelope(
        run_id=run_id, seq=seq, ts=0.0, event=Note(operation="vm_sync", phase="discovery", message="m")
    )


class CountingEncoder:
    def __init__(self) -> None:
        self.calls = 0
        self._codec = make_codec()

    def __call__(self, e: Envelope) -> Frame:
        self.calls += 1
        return self._codec.encode(e)


def test_publish_is_a_plain_call_that_never_awaits() -> None:
    assert not inspect.iscoroutinefunction(EventBus.publish)
    bus = EventBus(CountingEncoder())
    frame = bus.publish(env(1))  # no loop, no subscribers: still fine
    assert frame.seq == 1


async def test_publish_serializes_once_and_every_subscriber_gets_the_same_bytes() -> None:
    enc = CountingEncoder()
    bus = EventBus(enc)
    subs = [bus.subscribe("r1") for _ in range(50)]
    frame = bus.publish(env(1))
    assert enc.calls == 1
    for sub in subs:
        (got,) = await sub.get()
        assert got is frame


async def test_subscribers_only_see_their_run_and_wildcards_see_all() -> None:
    bus = EventBus(CountingEncoder())
    a, b, everything = bus.subscribe("r1"), bus.subscribe("r2"), bus.subscribe(ALL)
    bus.publish(env(1, "r1"))
    bus.publish(env(1, "r2"))
    assert [f.run_id for f in await a.get()] == ["r1"]
    assert [f.run_id for f in await b.get()] == ["r2"]
    assert [f.run_id for f in await everything.get()] == ["r1", "r2"]


async def test_get_returns_everything_buffered_in_order() -> None:
    bus = EventBus(CountingEncoder())
    sub = bus.subscribe("r1")
    for seq in range(1, 6):
        bus.publish(env(seq))
    assert [f.seq for f in await sub.get()] == [1, 2, 3, 4, 5]


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    bus = EventBus(CountingEncoder())
    sub = bus.subscribe("r1")
    getter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not getter.done()
    bus.publish(env(1))
    assert [f.seq for f in await asyncio.wait_for(getter, 1)] == [1]


async def test_a_subscriber_over_its_limit_is_dropped_and_the_others_are_unaffected() -> None:
    bus = EventBus(CountingEncoder())
    drops: list[str] = []
    slow = bus.subscribe("r1", limit=3, on_drop=lambda sub, reason: drops.append(reason))
    fast = bus.subscribe("r1", limit=3)
    for seq in range(1, 4):
        bus.publish(env(seq))
        assert [f.seq for f in await fast.get()] == [seq]
    bus.publish(env(4))  # slow holds 3 unread frames: cut off
    assert slow.dropped is not None and "3 frames behind" in slow.dropped
    assert slow.pending == 0  # its buffer is released
    assert bus.subscribers("r1") == 1
    with pytest.raises(SubscriberDropped):
        await slow.get()
    assert [f.seq for f in await fast.get()] == [4]
    await asyncio.sleep(0)  # drop callbacks run on the loop, never inside publish
    assert len(drops) == 1 and bus.dropped == 1


async def test_drop_callbacks_run_after_publish_returns() -> None:
    bus = EventBus(CountingEncoder())
    calls: list[str] = []
    bus.subscribe("r1", limit=1, on_drop=lambda sub, reason: calls.append("dropped"))
    bus.publish(env(1))
    bus.publish(env(2))
    calls.append("published")
    await asyncio.sleep(0)
    assert calls == ["published", "dropped"]


async def test_a_failing_drop_callback_does_not_break_the_bus() -> None:
    bus = EventBus(CountingEncoder())

    def boom(sub: object, reason: str) -> None:
        raise RuntimeError("observer bug")

    bus.subscribe("r1", limit=1, on_drop=boom)
    ok = bus.subscribe("r1", limit=10)
    bus.publish(env(1))
    bus.publish(env(2))
    await asyncio.sleep(0)
    bus.publish(env(3))
    assert [f.seq for f in await ok.get()] == [1, 2, 3]


async def test_ending_a_topic_lets_subscribers_drain_then_stop() -> None:
    bus = EventBus(CountingEncoder())
    sub = bus.subscribe("r1")
    bus.publish(env(1))
    bus.end("r1")
    assert [f.seq for f in await sub.get()] == [1]
    assert await sub.get() == []
    batches = [batch async for batch in sub]
    assert batches == []
    assert bus.subscribers("r1") == 0


async def test_closing_a_subscription_unsubscribes_it() -> None:
    bus = EventBus(CountingEncoder())
    sub = bus.subscribe("r1")
    sub.close()
    sub.close()
    assert bus.subscribers() == 0
    bus.publish(env(1))
    assert await sub.get() == []
