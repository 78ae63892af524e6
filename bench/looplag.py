"""The event loop's lag, as the benchmarks measure it: a ticker asks to sleep ``interval`` and records how
much later than asked it woke up (time the loop could not run callbacks: its own work, the GIL, the GC).

    async with LoopLag() as lag:
        await work()
    print(lag.max_s, lag.p99_s)
"""

from __future__ import annotations

import asyncio
import time


class LoopLag:
    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.samples.append(time.perf_counter() - before - self.interval_s)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    @property
    def max_s(self) -> float:
        return max(self.samples, default=0.0)

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.samples)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
