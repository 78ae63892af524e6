"""The heap policy (proxbox.heap): full collections are postponed while a run holds its working set, the
thresholds come back exactly, and start-up objects leave the collector's scans."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from proxbox import heap


@pytest.fixture(autouse=True)
def clean_collector() -> Iterator[None]:
    saved, enabled = gc.get_threshold(), heap.enabled
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()
    heap.enabled = enabled


class FullPasses:
    """Counts generation-2 collections the collector starts on its own while installed."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            self.count += 1

    def __enter__(self) -> FullPasses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def grow_heap(objects: int = 200_000) -> list[list[int]]:
    """Many surviving container objects: what makes the collector schedule full passes."""
    return [[i] for i in range(objects)]


def test_a_growing_heap_gets_full_collections_without_the_policy():
    with FullPasses() as passes:
        kept = grow_heap()
    assert len(kept) == 200_000
    assert passes.count >= 1


def test_no_full_collection_runs_while_deferred_and_the_thresholds_come_back():
    with FullPasses() as passes, heap.full_collections_deferred():
        assert heap.deferring()
        assert gc.get_threshold() == (700, 10, heap.DEFERRED_FULL_THRESHOLD)
        kept = grow_heap()
    assert len(kept) == 200_000
    assert passes.count == 0
    assert gc.get_threshold() == (700, 10, 10)
    assert not heap.deferring()


def test_young_collections_go_on_while_deferred():
    young = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            young.append(info["generation"])

    gc.callbacks.append(record)
    try:
        with heap.full_collections_deferred():
            grow_heap(50_000)
    finally:
        gc.callbacks.remove(record)
    assert young and set(young) <= {0, 1}


def test_overlapping_scopes_restore_only_when_the_last_one_ends():
    first = heap.full_collections_deferred()
    second = heap.full_collections_deferred()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first scope ends while the second still holds its working set
    assert heap.deferring()
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_thresholds_come_back_after_an_exception():
    with pytest.raises(RuntimeError), heap.full_collections_deferred():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_someone_else_set_meanwhile_are_kept():
    with heap.full_collections_deferred():
        gc.set_threshold(1000, 20, 30)
    assert gc.get_threshold() == (1000, 20, 30)


def test_a_collector_switched_off_by_threshold_stays_off():
    gc.set_threshold(0, 10, 10)
    with heap.full_collections_deferred():
        assert gc.get_threshold() == (0, 10, 10)
    assert gc.get_threshold() == (0, 10, 10)


def test_the_policy_can_be_switched_off_to_measure_it():
    heap.enabled = False
    with heap.full_collections_deferred():
        assert gc.get_threshold() == (700, 10, 10)
        assert not heap.deferring()


def test_freezing_start_up_takes_its_objects_out_of_later_scans():
    kept = grow_heap(10_000)
    frozen = heap.freeze_startup()
    assert frozen == gc.get_freeze_count() >= 10_000
    # a frozen object is in no generation the collector scans
    assert not any(obj is kept for obj in gc.get_objects(generation=2))
    assert len(kept) == 10_000


async def test_a_sync_run_defers_full_collections_from_discovery_to_its_end():
    """The engine holds inventory, NetBox state and plan for the whole run: the deferral spans all of it."""
    from proxbox.config import Settings
    from proxbox.jobs import ListReporter
    from proxbox.proxmox.models import Inventory
    from proxbox.sync.engine import SyncEngine

    seen: list[bool] = []

    async def discover(settings: Settings, **kw: object) -> Inventory:
        seen.append(heap.deferring())
        return Inventory(clusters=(), failed_endpoints=())

    outcome = await SyncEngine(Settings(), discover=discover).run("full", ListReporter(run_id="t"))
    assert outcome.status == "failed"  # nothing discovered: the run still ends, and the collector is back
    assert seen == [True]
    assert not heap.deferring()
    assert gc.get_threshold() == (700, 10, 10)
