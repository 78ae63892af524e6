"""What ``proxbox watch`` makes of frames: the run view (dedupe, gaps, phases, exit status) and the output."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from proxbox.watch.render import PlainRenderer, RichRenderer, make_renderer
from proxbox.watch.view import RunView, exit_code, format_counts, format_error, format_step, format_summary

RUN = "20260105T120301Z-a1b2c3"


def frame(seq: int, type_: str = "step", **kw: Any) -> dict[str, Any]:
    return {"type": type_, "run_id": RUN, "seq": seq, "ts": "", "operation": "full_sync", **kw}


def run_frames() -> list[dict[str, Any]]:
    item = {"kind": "virtual_machine", "name": "web-1", "cluster": "lab-a", "vmid": 101}
    return [
        frame(1, phase="start", status="started", kind="full", message="", endpoints=["lab-a"]),
        frame(2, phase="discovery", status="started", message="", progress={"done": 0, "total": 2}),
        frame(3, phase="discovery", status="info", message="cluster lab-a: 1 node, 2 guests"),
        frame(4, phase="discovery", status="completed", counts={"created": 0}, duration_s=0.5, message=""),
        frame(5, phase="creation", status="started", message="", progress={"done": 0, "total": 2}),
        frame(6, phase="creation", status="created", item=item, progress={"done": 1, "total": 2}, message=""),
        frame(
            7,
            "error",
            phase="creation",
            status="failed",
            error="netbox_rejected",
            error_class="NetBoxRejected",
            detail="name exists",
            retryable=False,
            item={**item, "name": "web-2", "vmid": 102},
        ),
        frame(8, phase="creation", status="completed", counts={"created": 1, "failed": 1}, duration_s=1.25),
        frame(
            9,
            "complete",
            phase="finish",
            status="partial",
            ok=False,
            counts={"created": 1, "failed": 1},
            duration_s=2.0,
            message="full sync partial",
        ),
    ]


def test_view_tracks_phases_errors_and_the_final_frame() -> None:
    view = RunView()
    assert all(view.accept(f) for f in run_frames())
    assert view.run_id == RUN and view.kind == "full" and view.last_seq == 9
    assert list(view.phases) == ["discovery", "creation"]
    creation = view.phases["creation"]
    assert (creation.done, creation.total, creation.finished, creation.errors) == (2, 2, True, 1)
    assert creation.counts == {"created": 1, "failed": 1}
    assert view.notes == ["cluster lab-a: 1 node, 2 guests"]
    assert [e["error"] for e in view.errors] == ["netbox_rejected"]
    assert view.status == "partial" and view.exit_code == 1


def test_view_ignores_frames_it_has_seen_and_other_runs_frames() -> None:
    view = RunView()
    frames = run_frames()
    for f in frames[:5]:
        view.accept(f)
    # a reconnect replays from an older seq: nothing is counted twice
    assert [view.accept(f) for f in frames[3:7]] == [False, False, True, True]
    assert view.frames == 7
    assert not view.accept({**frames[7], "run_id": "another-run"})
    assert not view.accept({"type": "reply", "command": "watch", "ok": True})


def test_view_records_gaps_in_the_sequence() -> None:
    view = RunView()
    frames = run_frames()
    view.accept(frames[0])
    view.accept(frames[4])  # seqs 2-4 were trimmed from the server's log
    assert view.gaps == [(2, 4)]
    view.accept(frames[-1])
    assert view.gaps == [(2, 4), (6, 8)]
    assert "6 frame(s) were no longer in the server's log" in format_summary(view)[-1]


def test_a_watcher_starting_after_seq_n_sees_no_gap_at_n_plus_1() -> None:
    view = RunView(last_seq=4)
    frames = run_frames()
    assert not view.accept(frames[3])  # seq 4: already seen (or skipped on purpose)
    assert view.accept(frames[4])
    assert view.gaps == []
    trimmed = RunView()
    trimmed.accept(frames[2])  # watching from the start, but seqs 1-2 are gone
    assert trimmed.gaps == [(1, 2)]


def test_exit_status_is_0_only_for_a_successful_run() -> None:
    assert exit_code("succeeded") == 0
    for status in ("partial", "failed", "cancelled", None):
        assert exit_code(status) == 1


def test_formatting() -> None:
    frames = run_frames()
    assert format_counts({"created": 3, "updated": 0, "failed": 2}) == "created 3, failed 2"
    assert format_counts({}) == "nothing changed"
    assert (
        format_error(frames[6])
        == "[creation] netbox_rejected: virtual_machine web-2 (lab-a, vmid 102): name exists"
    )
    assert format_step(frames[0]) == f"run {RUN}: full sync started on lab-a"
    assert format_step(frames[5]) == "[creation] 1/2 created virtual_machine web-1 (lab-a, vmid 101)"
    guest_note = frame(
        10, phase="discovery", status="info", message="qemu 101 web", progress={"done": 1, "total": 2}
    )
    assert format_step(guest_note) is None  # per-object notes move the bar; verbose prints them
    assert format_step(guest_note, verbose=True) == "[discovery] qemu 101 web"
    unchanged = {**frames[5], "status": "unchanged"}
    assert format_step(unchanged) is None
    assert format_step(unchanged, verbose=True) is not None
    view = RunView()
    for f in frames:
        view.accept(f)
    assert format_summary(view) == [
        f"run {RUN} partial in 2.0s: created 1, failed 1",
        "  errors: netbox_rejected x1",
    ]


def test_plain_renderer_prints_one_line_per_event_worth_logging() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out)
    view = RunView()
    renderer.start("run latest on http://127.0.0.1:8800")
    for f in run_frames():
        if view.accept(f):
            renderer.frame(view, f)
    renderer.notice("connection lost: closed 1001; reconnecting in 0.5s")
    renderer.finish(view)
    assert out.getvalue().splitlines() == [
        "watching run latest on http://127.0.0.1:8800",
        f"run {RUN}: full sync started on lab-a",
        "[discovery] started (2 items)",
        "[discovery] cluster lab-a: 1 node, 2 guests",
        "[discovery] completed in 0.5s: nothing changed",
        "[creation] started (2 items)",
        "[creation] 1/2 created virtual_machine web-1 (lab-a, vmid 101)",
        "ERROR [creation] netbox_rejected: virtual_machine web-2 (lab-a, vmid 102): name exists",
        "[creation] completed in 1.2s: created 1, failed 1",
        "-- connection lost: closed 1001; reconnecting in 0.5s",
        f"run {RUN} partial in 2.0s: created 1, failed 1",
        "  errors: netbox_rejected x1",
    ]


def test_rich_renderer_draws_phase_bars_errors_and_the_summary() -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, force_terminal=True, width=120, color_system=None))
    view = RunView()
    renderer.start("run latest")
    for f in run_frames():
        if view.accept(f):
            renderer.frame(view, f)
    renderer.finish(view)
    text = out.getvalue()
    assert "✗ [creation] netbox_rejected" in text
    assert "discovery" in text and "creation" in text
    assert "2/2" in text  # the creation bar completed
    assert f"run {RUN} partial in 2.0s: created 1, failed 1" in text


def test_renderer_is_plain_when_output_is_not_a_terminal() -> None:
    assert isinstance(make_renderer(stream=io.StringIO()), PlainRenderer)
    assert isinstance(make_renderer(plain=False, stream=io.StringIO()), RichRenderer)
