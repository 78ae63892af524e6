"""Keeping the garbage collector's pauses off the event loop.

CPython's cyclic collector stops the whole process while it runs, whatever thread triggered it. A young
collection scans only recent objects (well under a millisecond), but a *full* collection scans every tracked
object alive: with a run's working set in memory (6,000 discovered guests are a few hundred thousand objects)
that is a 40 to 100 ms freeze of the event loop, and with it of every watcher's frames. Measured by
``bench/discovery.py --gc compare``: the largest event-loop stalls during discovery are exactly those passes.

Two measures, both process-wide and both undone cleanly:

- :func:`freeze_startup` — once start-up is done (modules imported, app built), collect and move everything
  alive into the collector's permanent generation (``gc.freeze``): those objects live as long as the process,
  and no later full collection has to scan them again.
- :func:`full_collections_deferred` — while a run holds its working set, automatic *full* collections are
  postponed (young collections go on). The working set is acyclic (parsed JSON, attrs values) and freed by
  reference counting when the run ends; cyclic garbage made meanwhile waits for the first full collection
  after the run, when the heap is small again and the pass is short. Nested and overlapping uses (the sync
  engine wraps discovery, which wraps itself) count: the thresholds come back when the last one ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from proxbox.logsetup import get_logger

log = get_logger(__name__)

# gc's third threshold counts young-generation collections between full ones; this many is "never" for a run
DEFERRED_FULL_THRESHOLD = 1_000_000_000

_depth = 0
_saved: tuple[int, int, int] | None = None

# off only to measure the difference (bench/discovery.py --gc compare); a service keeps it on
enabled = True


def freeze_startup() -> int:
    """Collect, then freeze every object alive into the permanent generation; returns how many were frozen.
    Call once, after start-up and before serving."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap.frozen", objects=frozen)
    return frozen


@contextlib.contextmanager
def full_collections_deferred() -> Iterator[None]:
    """Postpone automatic full collections for the duration (young ones go on); see the module doc.

    Enter and leave on one thread (the event loop's); overlapping scopes from several tasks are fine.
    """
    global _depth, _saved
    if not enabled:
        yield
        return
    if _depth == 0:
        _saved = gc.get_threshold()
        young, middle = _saved[0], _saved[1]
        if young:  # threshold0 == 0 means the collector was switched off by someone: leave it so
            gc.set_threshold(young, middle, DEFERRED_FULL_THRESHOLD)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            current = gc.get_threshold()
            # restore only what we changed: someone else's thresholds set meanwhile are theirs
            if current[2] == DEFERRED_FULL_THRESHOLD:
                gc.set_threshold(current[0], current[1], _saved[2])
            _saved = None


def deferring() -> bool:
    """Whether full collections are being postponed now (for tests and the status page)."""
    return _depth > 0 and gc.get_threshold()[2] == DEFERRED_FULL_THRESHOLD
