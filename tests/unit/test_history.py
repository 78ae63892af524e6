from __future__ import annotations

from pathlib import Path

import pytest

from proxbox.errors import ConfigError
from proxbox.events import Counts
from proxbox.history import INTERRUPTED, History, RunRecord


def record(run_id: str, created_at: float, state: str = "finished", **kw: object) -> RunRecord:
    return RunRecord(id=run_id, kind="vms", trigger="http", state=state, created_at=created_at, **kw)  # type: ignore[arg-type]


async def test_saved_runs_come_back_newest_first(tmp_path: Path) -> None:
    history = History.in_state_dir(str(tmp_path), limit=10)
    await history.open()
    history.save(
        record("a", 1.0, status="succeeded", counts=Counts(created=2), final_frame=b'{"seq":3}', last_seq=3)
    )
    history.save(record("b", 2.0, status="failed"))
    runs = await history.list()
    assert [r.id for r in runs] == ["b", "a"]
    a = await history.get("a")
    assert a is not None
    assert (a.status, a.counts, a.final_frame, a.last_seq) == (
        "succeeded",
        Counts(created=2),
        b'{"seq":3}',
        3,
    )
    assert await history.get("nope") is None
    await history.close()


async def test_a_later_save_of_the_same_run_replaces_it(tmp_path: Path) -> None:
    history = History.in_state_dir(str(tmp_path), limit=10)
    await history.open()
    history.save(record("a", 1.0, state="queued"))
    history.save(record("a", 1.0, state="running", started_at=1.5))
    history.save(record("a", 1.0, status="cancelled", started_at=1.5, finished_at=2.0))
    (only,) = await history.list()
    assert (only.state, only.status, only.finished_at) == ("finished", "cancelled", 2.0)
    await history.close()


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    first = History.in_state_dir(str(tmp_path), limit=10)
    await first.open()
    first.save(record("a", 1.0, status="succeeded"))
    await first.close()
    second = History.in_state_dir(str(tmp_path), limit=10)
    assert await second.open() == 0
    rec = await second.get("a")
    assert rec is not None and rec.status == "succeeded"
    await second.close()


async def test_runs_left_unfinished_by_a_dead_process_are_marked_interrupted(tmp_path: Path) -> None:
    first = History.in_state_dir(str(tmp_path), limit=10)
    await first.open()
    first.save(record("a", 1.0, state="running", started_at=1.1))
    first.save(record("b", 2.0, state="queued"))
    await first.close()
    second = History.in_state_dir(str(tmp_path), limit=10)
    assert await second.open() == 2
    for run_id in ("a", "b"):
        rec = await second.get(run_id)
        assert rec is not None
        assert (rec.state, rec.status, rec.message) == ("finished", "failed", INTERRUPTED)
    await second.close()


async def test_only_the_newest_finished_runs_are_kept(tmp_path: Path) -> None:
    history = History.in_state_dir(str(tmp_path), limit=3)
    await history.open()
    for i in range(6):
        history.save(record(f"r{i}", float(i), status="succeeded"))
    assert [r.id for r in await history.list()] == ["r5", "r4", "r3"]
    await history.close()


async def test_list_filters_by_kind(tmp_path: Path) -> None:
    history = History(":memory:", limit=10)
    await history.open()
    history.save(record("a", 1.0))
    history.save(RunRecord(id="b", kind="nodes", trigger="ws", state="finished", created_at=2.0))
    assert [r.id for r in await history.list(kind="nodes")] == ["b"]
    await history.close()


async def test_an_unusable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    history = History.in_state_dir(str(blocker / "state"), limit=10)
    with pytest.raises(ConfigError) as info:
        await history.open()
    assert info.value.key == "server.state_dir"
    await history.close()
