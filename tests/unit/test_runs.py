from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxbox.bus import EventBus
from proxbox.errors import RunNotFound, ServerDraining
from proxbox.events import Counts, Reporter, RunKind, RunOutcome
from proxbox.frames import Frame, make_codec
from proxbox.history import History
from proxbox.runs import Run, RunManager, RunObserver, Watch, covers
from tests.fixtures.server import ScriptedJob

MakeManager = Callable[..., Awaitable[RunManager]]


@pytest.fixture
async def make_manager() -> AsyncIterator[MakeManager]:
    made: list[RunManager] = []

    async def make(job: Any, *, subscriber_buffer: int = 1000, **kw: Any) -> RunManager:
        bus = EventBus(make_codec().encode, default_limit=subscriber_buffer)
        manager = RunManager(
            job, bus, History(":memory:", limit=100), subscriber_buffer=subscriber_buffer, **kw
        )
        await manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


async def collect(watch: Watch) -> list[Frame]:
    frames = list(watch.backlog)
    if watch.subscription is not None:
        async with asyncio.timeout(10):
            async for batch in watch.subscription:
                frames.extend(batch)
    return frames


def kinds(frames: list[Frame]) -> list[str]:
    return [f.type for f in frames]


async def finished(run: Run) -> None:
    await asyncio.wait_for(run.finished.wait(), 10)


def test_coverage_rules() -> None:
    assert (
        covers("nodes", "nodes")
        and covers("full", "nodes")
        and covers("full", "vms")
        and covers("full", "full")
    )
    assert not covers("nodes", "vms") and not covers("vms", "full") and not covers("nodes", "full")


async def test_a_run_streams_gapless_seqs_from_1_and_ends_with_exactly_one_complete(
    make_manager: MakeManager,
) -> None:
    job = ScriptedJob(items=4)
    job.hold.clear()
    runs = await make_manager(job)
    run, joined = runs.trigger("nodes")
    assert not joined
    watch = await runs.attach(run.id)
    job.hold.set()
    frames = await collect(watch)
    assert [f.seq for f in frames] == list(range(1, 4 + 5))  # started, phase, 4 items, phase done, complete
    assert kinds(frames).count("complete") == 1 and frames[-1].type == "complete"
    assert json.loads(frames[0].data)["status"] == "started"
    assert run.status == "succeeded" and run.counts.created == 4


async def test_a_trigger_of_the_running_kind_joins_the_active_run(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=3)
    job.hold.clear()
    runs = await make_manager(job)
    first, _ = runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    second, joined = runs.trigger("nodes")
    assert joined and second is first
    job.hold.set()
    await finished(first)
    assert len(job.calls) == 1


@pytest.mark.parametrize("kind", ["nodes", "vms", "full"])
async def test_an_active_full_run_covers_every_kind(make_manager: MakeManager, kind: RunKind) -> None:
    job = ScriptedJob(items=2)
    job.hold.clear()
    runs = await make_manager(job)
    full, _ = runs.trigger("full")
    await asyncio.wait_for(job.started.wait(), 5)
    run, joined = runs.trigger(kind)
    assert joined and run is full
    job.hold.set()
    await finished(full)


async def test_a_kind_the_active_run_does_not_cover_is_queued_then_runs(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=2)
    job.hold.clear()
    runs = await make_manager(job)
    nodes, _ = runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    vms, joined = runs.trigger("vms")
    assert not joined and vms is not nodes and vms.state == "queued"
    again, joined_again = runs.trigger("vms")  # at most one pending run per kind
    assert joined_again and again is vms
    full, _ = runs.trigger("full")
    covered, joined_full = runs.trigger("nodes")  # nodes is running, but keep it simple: joins the active one
    assert joined_full and covered is nodes
    job.hold.set()
    await finished(vms)
    await finished(full)
    assert [k for k, _ in job.calls] == ["nodes", "vms", "full"]


async def test_a_queued_full_run_absorbs_later_triggers_of_other_kinds(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=1)
    job.hold.clear()
    runs = await make_manager(job)
    runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    full, _ = runs.trigger("full")
    vms, joined = runs.trigger("vms")
    assert joined and vms is full
    job.hold.set()
    await finished(full)


async def test_runs_never_overlap(make_manager: MakeManager) -> None:
    running = 0
    peak = 0

    async def job(kind: RunKind, reporter: Reporter) -> RunOutcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return RunOutcome(status="succeeded", counts=Counts())

    runs = await make_manager(job)
    started = [runs.trigger(k)[0] for k in ("nodes", "vms", "full")]
    for run in started:
        await finished(run)
    assert peak == 1


async def test_a_late_watcher_gets_backlog_then_live_with_no_gap_and_no_duplicate(
    make_manager: MakeManager,
) -> None:
    job = ScriptedJob(items=10)
    runs = await make_manager(job)
    job.hold.clear()
    run, _ = runs.trigger("vms")
    await asyncio.wait_for(job.started.wait(), 5)
    for _ in range(5):  # let a few items through, one at a time
        job.hold.set()
        await asyncio.sleep(0)
        job.hold.clear()
        await asyncio.sleep(0.01)
    early_seq = run.last_seq
    assert early_seq >= 3
    watch = await runs.attach(run.id)
    assert [f.seq for f in watch.backlog] == list(range(1, early_seq + 1))
    job.hold.set()
    frames = await collect(watch)
    assert [f.seq for f in frames] == list(range(1, run.last_seq + 1))
    assert kinds(frames).count("complete") == 1


async def test_attach_with_since_replays_only_later_frames(make_manager: MakeManager) -> None:
    runs = await make_manager(ScriptedJob(items=3))
    run, _ = runs.trigger("vms")
    await finished(run)
    watch = await runs.attach(run.id, since=4)
    assert not watch.live
    assert [f.seq for f in watch.backlog] == list(range(5, run.last_seq + 1))
    assert (await runs.attach(run.id, since=run.last_seq)).backlog == []


async def test_detaching_every_watcher_does_not_stop_the_run(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=5)
    job.hold.clear()
    runs = await make_manager(job)
    run, _ = runs.trigger("nodes")
    watches = [await runs.attach(run.id) for _ in range(3)]
    assert run.watchers() == 3
    for watch in watches:
        runs.detach(watch)
    assert run.watchers() == 0
    job.hold.set()
    await finished(run)
    assert run.status == "succeeded" and run.counts.created == 5


async def test_cancel_is_cooperative_and_ends_with_complete_cancelled(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=50)
    job.hold.clear()
    runs = await make_manager(job)
    run, _ = runs.trigger("vms")
    watch = await runs.attach(run.id)
    await asyncio.wait_for(job.started.wait(), 5)
    summary = await runs.cancel(run.id)
    assert summary["cancel_requested"] is True
    job.hold.set()
    frames = await collect(watch)
    final = json.loads(frames[-1].data)
    assert (final["type"], final["status"]) == ("complete", "cancelled")
    assert run.counts.created < 50


async def test_cancelling_a_queued_run_ends_it_without_running_the_job(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=2)
    job.hold.clear()
    runs = await make_manager(job)
    active, _ = runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    queued, _ = runs.trigger("vms")
    watch = await runs.attach(queued.id)
    await runs.cancel(queued.id)
    frames = await collect(watch)
    assert [json.loads(f.data)["type"] for f in frames] == ["step", "complete"]
    assert json.loads(frames[-1].data)["status"] == "cancelled"
    assert runs.queued == ()
    job.hold.set()
    await finished(active)
    assert [k for k, _ in job.calls] == ["nodes"]


async def test_cancelling_a_finished_run_changes_nothing(make_manager: MakeManager) -> None:
    runs = await make_manager(ScriptedJob(items=1))
    run, _ = runs.trigger("nodes")
    await finished(run)
    summary = await runs.cancel(run.id)
    assert (summary["state"], summary["status"]) == ("finished", "succeeded")


async def test_a_crashing_job_reports_an_error_frame_and_completes_failed(make_manager: MakeManager) -> None:
    async def job(kind: RunKind, reporter: Reporter) -> RunOutcome:
        raise RuntimeError("boom")

    runs = await make_manager(job)
    run, _ = runs.trigger("full")
    await finished(run)
    frames = [json.loads(f.data) for f in run.frames_since(0)]
    assert [f["type"] for f in frames] == ["step", "error", "complete"]
    assert frames[1]["error"] == "internal_error" and "boom" in frames[1]["detail"]
    assert frames[2]["status"] == "failed"
    # the manager keeps working
    again, joined = runs.trigger("full")
    assert not joined
    await finished(again)


async def test_the_event_log_is_bounded(make_manager: MakeManager) -> None:
    runs = await make_manager(ScriptedJob(items=20), log_limit=5)
    run, _ = runs.trigger("vms")
    await finished(run)
    kept = run.frames_since(0)
    assert len(kept) == 5 and kept[-1].type == "complete"
    assert [f.seq for f in kept] == list(range(run.last_seq - 4, run.last_seq + 1))


async def test_unknown_runs_are_not_found(make_manager: MakeManager) -> None:
    runs = await make_manager(ScriptedJob())
    with pytest.raises(RunNotFound):
        await runs.attach("nope")
    with pytest.raises(RunNotFound):
        await runs.lookup("latest")
    with pytest.raises(RunNotFound):
        await runs.cancel("nope")


async def test_latest_is_the_active_run(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=1)
    job.hold.clear()
    runs = await make_manager(job)
    active, _ = runs.trigger("nodes")
    runs.trigger("vms")
    await asyncio.wait_for(job.started.wait(), 5)
    assert (await runs.lookup("latest"))["id"] == active.id
    job.hold.set()


async def test_runs_that_left_memory_are_still_known_from_history(make_manager: MakeManager) -> None:
    runs = await make_manager(ScriptedJob(items=1), retained_runs=1)
    first, _ = runs.trigger("nodes")
    await finished(first)
    second, _ = runs.trigger("vms")
    await finished(second)
    assert runs.find(first.id) is None
    summary = await runs.lookup(first.id)
    assert (summary["state"], summary["status"], summary["last_seq"]) == (
        "finished",
        "succeeded",
        first.last_seq,
    )
    watch = await runs.attach(first.id)
    assert not watch.live
    assert [f.type for f in watch.backlog] == ["complete"] and watch.backlog[0].seq == first.last_seq
    listed = await runs.list()
    assert [r["id"] for r in listed] == [second.id, first.id]


async def test_drain_lets_the_active_run_finish_within_the_grace(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=3, delay_s=0.01)
    runs = await make_manager(job)
    run, _ = runs.trigger("nodes")
    await asyncio.wait_for(job.started.wait(), 5)
    queued, _ = runs.trigger("full")
    await runs.drain(5.0)
    assert run.status == "succeeded"
    assert queued.status == "cancelled"
    with pytest.raises(ServerDraining):
        runs.trigger("vms")


async def test_drain_cancels_the_run_after_the_grace(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=1000, delay_s=0.01)
    runs = await make_manager(job)
    run, _ = runs.trigger("full")
    await asyncio.wait_for(job.started.wait(), 5)
    await runs.drain(0.05)
    assert run.status == "cancelled" and 0 < run.counts.created < 1000


async def test_drain_interrupts_a_run_that_ignores_cancel(make_manager: MakeManager) -> None:
    job = ScriptedJob(items=1000, delay_s=0.01, ignore_cancel=True)
    runs = await make_manager(job, cancel_grace_s=0.05)
    run, _ = runs.trigger("full")
    watch = await runs.attach(run.id)
    await asyncio.wait_for(job.started.wait(), 5)
    await runs.drain(0.05)
    frames = await collect(watch)
    assert json.loads(frames[-1].data)["status"] == "cancelled"
    assert kinds(frames).count("complete") == 1


async def test_observers_hear_runs_and_watchers(make_manager: MakeManager) -> None:
    seen: list[tuple[str, Any]] = []

    class Recorder(RunObserver):
        def run_queued(self, run: Run) -> None:
            seen.append(("queued", run.kind))

        def run_started(self, run: Run) -> None:
            seen.append(("started", run.kind))

        def run_finished(self, run: Run) -> None:
            seen.append(("finished", run.status))

        def watchers_changed(self, watchers: int) -> None:
            seen.append(("watchers", watchers))

        def watcher_dropped(self, run_id: str, reason: str) -> None:
            seen.append(("dropped", run_id))

    class Broken(RunObserver):
        def run_started(self, run: Run) -> None:
            raise RuntimeError("observer bug")

    job = ScriptedJob(items=5)
    job.hold.clear()
    runs = await make_manager(job, subscriber_buffer=2)
    runs.add_observer(Broken())
    runs.add_observer(Recorder())
    run, _ = runs.trigger("vms")
    slow = await runs.attach(run.id)  # never read: dropped once 2 frames are waiting
    job.hold.set()
    await finished(run)
    await asyncio.sleep(0)
    assert seen[0] == ("queued", "vms") and ("started", "vms") in seen and ("finished", "succeeded") in seen
    assert ("watchers", 1) in seen and ("dropped", run.id) in seen
    assert slow.subscription is not None and slow.subscription.dropped is not None
