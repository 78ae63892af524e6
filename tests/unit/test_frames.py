from __future__ import annotations

import json
import re

import pytest

from proxbox.errors import InvalidRequest
from proxbox.events import (
    Counts,
    Envelope,
    Item,
    ItemDone,
    ItemFailed,
    Note,
    PhaseCompleted,
    PhaseStarted,
    RunCompleted,
    RunStarted,
)
from proxbox.frames import (
    AuthMessage,
    CancelCommand,
    CompleteFrame,
    ErrorFrame,
    Reply,
    StepFrame,
    SyncCommand,
    WatchCommand,
    make_codec,
    make_converter,
    rfc3339,
)

TS = 1767614581.123456
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
VM = Item(kind="virtual_machine", name="web01", cluster="lab-a", vmid=100, netbox_id=7, action="updated")

EVENTS = [
    RunStarted(operation="vm_sync", kind="vms", endpoints=("lab-a",), message="vms sync started"),
    PhaseStarted(operation="vm_sync", phase="discovery", total=3),
    ItemDone(
        operation="vm_sync", phase="update", item=VM, done=1, total=3, changes=(("memory", "1024", "2048"),)
    ),
    Note(operation="vm_sync", phase="discovery", message="lab-a: 3 nodes, 48 guests", done=1, total=2),
    ItemFailed(
        operation="vm_sync",
        phase="creation",
        error="netbox_rejected",
        error_class="NetBoxRejected",
        detail="name must be unique",
        item=VM,
    ),
    PhaseCompleted(operation="vm_sync", phase="update", counts=Counts(updated=1), duration_s=0.5),
    RunCompleted(operation="vm_sync", status="partial", counts=Counts(updated=1, failed=1), duration_s=1.25),
]


def envelope(event: object, seq: int = 1) -> Envelope:
    return Envelope(run_id="r1", seq=seq, ts=TS, event=event)  # type: ignore[arg-type]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_becomes_one_json_text_frame_with_the_common_fields(event: object) -> None:
    frame = make_codec().encode(envelope(event, seq=4))
    obj = json.loads(frame.data.decode("utf-8"))
    assert obj["type"] in ("step", "error", "complete")
    assert obj["type"] == frame.type
    assert obj["run_id"] == "r1" and frame.run_id == "r1"
    assert obj["seq"] == 4 == frame.seq
    assert RFC3339_UTC.match(obj["ts"]), obj["ts"]
    assert obj["operation"] == "vm_sync"
    assert obj["phase"] == event.phase  # type: ignore[attr-defined]
    assert b"\n" not in frame.data


def test_frame_types_follow_the_event_kind() -> None:
    codec = make_codec()
    types = [codec.encode(envelope(e)).type for e in EVENTS]
    assert types == ["step", "step", "step", "step", "error", "step", "complete"]


def test_item_step_carries_status_item_progress_and_changes() -> None:
    obj = json.loads(make_codec().encode(envelope(EVENTS[2])).data)
    assert obj["status"] == "updated"
    assert obj["item"] == {
        "kind": "virtual_machine",
        "name": "web01",
        "cluster": "lab-a",
        "vmid": 100,
        "netbox_id": 7,
        "action": "updated",
    }
    assert obj["progress"] == {"done": 1, "total": 3}
    assert obj["changes"] == [{"field": "memory", "old": "1024", "new": "2048"}]
    assert "message" in obj


def test_step_frames_omit_members_that_do_not_apply() -> None:
    obj = json.loads(
        make_codec().encode(envelope(Note(operation="device_sync", phase="discovery", message="hi"))).data
    )
    assert obj == {
        "type": "step",
        "run_id": "r1",
        "seq": 1,
        "ts": rfc3339(TS),
        "operation": "device_sync",
        "phase": "discovery",
        "status": "info",
        "message": "hi",
    }


def test_run_started_step_names_the_kind_and_endpoints() -> None:
    obj = json.loads(make_codec().encode(envelope(EVENTS[0])).data)
    assert (obj["status"], obj["kind"], obj["endpoints"], obj["dry_run"]) == (
        "started",
        "vms",
        ["lab-a"],
        False,
    )


def test_error_frame_carries_code_class_detail_retryable_and_item() -> None:
    obj = json.loads(make_codec().encode(envelope(EVENTS[4])).data)
    assert obj["status"] == "failed"
    assert obj["error"] == "netbox_rejected"
    assert obj["error_class"] == "NetBoxRejected"
    assert obj["detail"] == "name must be unique"
    assert obj["retryable"] is False
    assert obj["item"]["name"] == "web01"


def test_error_frame_without_an_item_has_item_null() -> None:
    event = ItemFailed(
        operation="full_sync", phase="finish", error="internal_error", error_class="X", detail="boom"
    )
    obj = json.loads(make_codec().encode(envelope(event)).data)
    assert obj["item"] is None


def test_complete_frame_carries_status_ok_counts_and_duration() -> None:
    obj = json.loads(make_codec().encode(envelope(EVENTS[6])).data)
    assert obj["status"] == "partial"
    assert obj["ok"] is False
    assert obj["counts"] == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "deleted": 0,
        "failed": 1,
        "orphaned": 0,
    }
    assert obj["duration_s"] == 1.25
    assert obj["phase"] == "finish"


def test_succeeded_complete_is_ok() -> None:
    event = RunCompleted(operation="full_sync", status="succeeded", counts=Counts(), duration_s=0.1)
    assert json.loads(make_codec().encode(envelope(event)).data)["ok"] is True


def test_rfc3339_is_utc_with_z_suffix() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_decode_gives_back_the_wire_shape(event: object) -> None:
    codec = make_codec()
    wire = codec.wire(envelope(event, seq=9))
    assert codec.decode(codec.encode(envelope(event, seq=9)).data) == wire
    assert isinstance(wire, StepFrame | ErrorFrame | CompleteFrame)


def test_decode_rejects_non_frames() -> None:
    with pytest.raises(InvalidRequest):
        make_codec().decode('{"type": "reply"}')


def test_sse_form_uses_seq_as_event_id() -> None:
    frame = make_codec().encode(envelope(EVENTS[1], seq=12))
    assert frame.sse() == b"id: 12\ndata: " + frame.data + b"\n\n"


def test_each_codec_has_its_own_converter() -> None:
    assert make_converter() is not make_converter()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Full Update Sync", "full"),
        ("Sync Nodes", "nodes"),
        ("Sync Virtual Machines", "vms"),
        (" Sync Nodes\n", "nodes"),
    ],
)
def test_classic_text_commands_map_to_run_kinds(text: str, kind: str) -> None:
    cmd = make_codec().parse_command(text)
    assert isinstance(cmd, SyncCommand) and cmd.kind == kind and cmd.text == text.strip()


def test_json_commands_are_parsed() -> None:
    codec = make_codec()
    assert codec.parse_command('{"command": "watch", "run_id": "abc", "since": 5}') == WatchCommand(
        run_id="abc", since=5
    )
    assert codec.parse_command('{"command": "watch", "run_id": "latest"}') == WatchCommand(
        run_id="latest", since=0
    )
    assert codec.parse_command('{"command": "cancel", "run_id": "abc"}') == CancelCommand(run_id="abc")
    assert codec.parse_command('{"command": "sync", "kind": "nodes"}') == SyncCommand(kind="nodes")
    assert codec.parse_command('{"api_key": "k"}') == AuthMessage(api_key="k")


@pytest.mark.parametrize(
    "text",
    [
        "sync nodes",
        "Delete Everything",
        "",
        '{"command": "explode"}',
        '{"command": "watch"}',
        '{"command": "watch", "run_id": "x", "since": -1}',
        '{"command": "watch", "run_id": "x", "since": "3"}',
        '{"command": "watch", "run_id": 5}',
        '{"command": "sync", "kind": "everything"}',
        "[1, 2]",
        "{not json",
    ],
)
def test_anything_else_is_invalid_and_the_error_names_it_and_lists_the_valid_commands(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_codec().parse_command(text)
    message = info.value.message
    assert repr(text.strip())[:40].rstrip("'") in message
    for valid in ("Full Update Sync", "Sync Nodes", "Sync Virtual Machines", '"watch"', '"cancel"'):
        assert valid in message


def test_an_overlong_invalid_command_is_shortened_in_the_reply() -> None:
    with pytest.raises(InvalidRequest) as info:
        make_codec().parse_command("x" * 5000)
    assert len(info.value.message) < 600


def test_replies_omit_unset_members() -> None:
    text = make_codec().encode_reply(Reply(command="cancel", ok=True, run={"id": "r1"}))
    assert json.loads(text) == {
        "type": "reply",
        "command": "cancel",
        "ok": True,
        "run": {"id": "r1"},
        "message": "",
    }
