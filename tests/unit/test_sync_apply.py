"""The applier against an in-memory NetBox stand-in: chunking, live events, isolation of a rejected object,
skipping what depends on it, cancellation between chunks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest

from proxbox.config import NetBoxSettings
from proxbox.errors import NetBoxRejected, NetBoxUnavailable
from proxbox.events import ItemDone, ItemFailed, PhaseCompleted, PhaseStarted
from proxbox.jobs import ListReporter
from proxbox.sync.apply import Applier
from proxbox.sync.mapping import map_inventory
from proxbox.sync.model import INTERFACE, IP, MAC, VM, CurrentState
from proxbox.sync.plan import Plan, build_plan
from tests.fixtures.sync import cluster, guest, inventory, make_settings


@attrs.define
class FakeNetBox:
    """Bulk endpoints that behave like NetBox 4.7's: one transaction, per-item errors by index."""

    reject: Callable[[str, Mapping[str, Any]], str | None] = lambda endpoint, item: None
    per_item_errors: bool = True
    calls: list[tuple[str, str, int, int]] = attrs.Factory(list)  # (method, endpoint, items, events seen)
    events_seen: Callable[[], int] = lambda: 0
    next_id: int = 1
    rows: dict[str, dict[int, dict[str, Any]]] = attrs.Factory(dict)

    def _check(self, method: str, endpoint: str, items: Sequence[Mapping[str, Any]]) -> None:
        self.calls.append((method, endpoint, len(items), self.events_seen()))
        errors = [(i, msg) for i, item in enumerate(items) if (msg := self.reject(endpoint, item))]
        if errors:
            exc = NetBoxRejected("rejected", status=400)
            if self.per_item_errors:
                exc.body = {  # type: ignore[attr-defined]
                    "detail": f"{len(errors)} of {len(items)} objects could not be created.",
                    "errors": [{"index": i, "errors": {"name": [msg]}} for i, msg in errors],
                }
            else:
                exc.body = {"detail": "Bad request"}  # type: ignore[attr-defined]
            raise exc

    async def create(
        self, endpoint: str, items: Sequence[Mapping[str, Any]], **_: Any
    ) -> list[dict[str, Any]]:
        self._check("POST", endpoint, items)
        out = []
        for item in items:
            row = {**item, "id": self.next_id}
            self.rows.setdefault(endpoint, {})[self.next_id] = row
            self.next_id += 1
            out.append(row)
        return out

    async def update(self, endpoint: str, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        self._check("PATCH", endpoint, items)
        return [self.rows.setdefault(endpoint, {}).setdefault(i["id"], {}) | dict(i) for i in items]

    async def delete(self, endpoint: str, ids: Sequence[int]) -> None:
        self._check("DELETE", endpoint, [{"id": i} for i in ids])
        for i in ids:
            self.rows.get(endpoint, {}).pop(i, None)


def first_sync_plan(guests: int = 6) -> Plan:
    inv = inventory(cluster(guests=[guest(100 + i, f"vm{i}") for i in range(guests)]))
    settings = make_settings(primary_ip="always")
    return build_plan(
        map_inventory(inv, settings), CurrentState(objects=()), settings.sync, dt.date(2026, 12, 1)
    )


def applier(plan: Plan, fake: FakeNetBox, reporter: ListReporter, chunk: int = 2) -> Applier:
    settings = attrs.evolve(
        make_settings(),
        netbox=NetBoxSettings(url="http://x.invalid", token="t", bulk_chunk=chunk, concurrency=1),
    )
    fake.events_seen = lambda: len(reporter.events)
    return Applier(client=fake, plan=plan, reporter=reporter, operation="full_sync", settings=settings)  # type: ignore[arg-type]


async def test_items_are_reported_as_each_chunk_returns_not_at_the_end():
    reporter, fake = ListReporter(), FakeNetBox()
    await applier(first_sync_plan(), fake, reporter).run()
    vm_calls = [c for c in fake.calls if c[1] == "virtualization.virtual-machines" and c[0] == "POST"]
    assert [c[2] for c in vm_calls] == [2, 2, 2]
    # before the 2nd and 3rd chunk were sent, the previous chunk's VMs had already been reported
    seen = [c[3] for c in vm_calls]
    reported_before = [
        sum(1 for e in reporter.events[:n] if isinstance(e, ItemDone) and e.item.kind == VM) for n in seen
    ]
    assert reported_before == [0, 2, 4]


async def test_counts_equal_what_was_written():
    reporter, fake = ListReporter(), FakeNetBox()
    plan = first_sync_plan()
    a = applier(plan, fake, reporter)
    await a.run()
    written = sum(n for method, _, n, _ in fake.calls if method in ("POST", "PATCH"))
    assert a.counts.created + a.counts.updated == written == len(plan.creations) + len(plan.updates)
    done = [e for e in reporter.events if isinstance(e, ItemDone)]
    assert len(done) == written
    phases = [e.phase for e in reporter.events if isinstance(e, PhaseStarted)]
    assert phases == ["deletion", "creation", "update"]
    completed = {e.phase: e.counts for e in reporter.events if isinstance(e, PhaseCompleted)}
    assert completed["creation"].created == len(plan.creations)


async def test_one_rejected_vm_fails_alone_and_its_children_are_skipped():
    reporter = ListReporter()
    fake = FakeNetBox(reject=lambda ep, item: "name too long" if item.get("name") == "vm3" else None)
    a = applier(first_sync_plan(), fake, reporter)
    await a.run()
    failed = [e for e in reporter.events if isinstance(e, ItemFailed)]
    assert [(e.item.kind, e.item.vmid) for e in failed] == [(VM, 103)]
    assert failed[0].error == "netbox_rejected" and "name too long" in failed[0].detail
    created = {
        e.item.vmid
        for e in reporter.events
        if isinstance(e, ItemDone) and e.item.kind == VM and e.item.action == "created"
    }
    assert created == {100, 101, 102, 104, 105}
    skipped = {
        (e.item.kind, e.item.vmid)
        for e in reporter.events
        if isinstance(e, ItemDone) and e.item.action == "skipped"
    }
    assert {(INTERFACE, 103), (MAC, 103), (IP, 103)} <= skipped
    assert all(vmid == 103 for _, vmid in skipped)
    assert a.counts.failed == 1
    # the rest of the rejected chunk went again as one bulk request, not one by one
    vm_posts = [c[2] for c in fake.calls if c[1] == "virtualization.virtual-machines" and c[0] == "POST"]
    assert vm_posts == [2, 2, 1, 2]


async def test_rejection_without_per_item_errors_falls_back_to_one_by_one():
    reporter = ListReporter()
    fake = FakeNetBox(
        reject=lambda ep, item: "bad" if item.get("name") == "vm1" else None, per_item_errors=False
    )
    a = applier(first_sync_plan(), fake, reporter)
    await a.run()
    vm_posts = [c[2] for c in fake.calls if c[1] == "virtualization.virtual-machines" and c[0] == "POST"]
    assert vm_posts == [2, 1, 1, 2, 2]
    assert [e.item.vmid for e in reporter.events if isinstance(e, ItemFailed)] == [101]


async def test_cancel_stops_before_the_next_chunk():
    reporter = ListReporter()

    def reject(endpoint: str, item: Mapping[str, Any]) -> None:
        if endpoint == "virtualization.virtual-machines":
            reporter.cancel()

    fake = FakeNetBox(reject=reject)
    a = applier(first_sync_plan(), fake, reporter)
    await a.run()
    assert a.cancelled
    assert [c[2] for c in fake.calls if c[1] == "virtualization.virtual-machines"] == [2]
    assert not any(c[1] == "virtualization.interfaces" for c in fake.calls)


async def test_netbox_unreachable_stops_the_run():
    class Down(FakeNetBox):
        async def create(self, *_: Any, **__: Any) -> Any:
            raise NetBoxUnavailable("cannot connect to NetBox")

    reporter, fake = ListReporter(), Down()
    with pytest.raises(NetBoxUnavailable):
        await applier(first_sync_plan(), fake, reporter).run()
