"""Metrics from run events and from live state, read back from the per-app registry."""

from __future__ import annotations

import functools
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families

from proxbox.bus import EventBus
from proxbox.events import Counts, Item, ItemDone, ItemFailed, RunCompleted, RunStarted
from proxbox.frames import make_codec
from proxbox.metrics import Metrics, clients_of, sample_client, scan_frames, succeeded_clusters
from proxbox.netbox.client import RequestStats
from proxbox.proxmox.client import ClientStats
from proxbox.runs import Run

T0 = 1_767_614_581.0


def make_run(kind: str = "full", run_id: str = "r1") -> Run:
    return Run(
        run_id=run_id,
        kind=kind,  # type: ignore[arg-type]
        trigger="api",
        bus=EventBus(make_codec().encode),
        log_limit=1000,
        clock=lambda: T0,
    )


def vm(name: str, cluster: str, action: str = "created") -> Item:
    return Item(kind="virtual_machine", name=name, cluster=cluster, vmid=100, action=action)  # type: ignore[arg-type]


def finish(run: Run, status: str, counts: Counts, duration_s: float = 12.5) -> Run:
    run.emit(RunCompleted(operation="full_sync", status=status, counts=counts, duration_s=duration_s))  # type: ignore[arg-type]
    return run


def partial_run() -> Run:
    run = make_run()
    run.emit(RunStarted(operation="full_sync", kind="full"))
    run.emit(ItemDone(operation="full_sync", phase="creation", item=vm("a", "lab-a"), done=1, total=3))
    run.emit(ItemDone(operation="full_sync", phase="creation", item=vm("b", 'lab "b"'), done=2, total=3))
    run.emit(
        ItemFailed(
            operation="full_sync",
            phase="creation",
            error="netbox_rejected",
            error_class="NetBoxRejected",
            detail='name "c" exists',
            item=vm("c", 'lab "b"', action=None),  # type: ignore[arg-type]
        )
    )
    run.emit(
        ItemFailed(
            operation="full_sync",
            phase="discovery",
            error="proxmox_unavailable",
            error_class="X",
            detail="down",
        )
    )
    return finish(run, "partial", Counts(created=2, unchanged=5, failed=1))


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_scan_finds_clusters_failed_clusters_and_errors_by_code() -> None:
    scan = scan_frames(partial_run().frames_since(0))
    assert scan.clusters == {"lab-a", 'lab "b"'}  # JSON escapes are decoded
    assert scan.failed_clusters == {'lab "b"'}
    assert scan.errors == {("netbox_rejected", "creation"): 1, ("proxmox_unavailable", "discovery"): 1}


def test_only_clusters_without_errors_count_as_synced() -> None:
    scan = scan_frames(partial_run().frames_since(0))
    assert succeeded_clusters("succeeded", scan) == {"lab-a", 'lab "b"'}
    assert succeeded_clusters("partial", scan) == {"lab-a"}
    assert succeeded_clusters("failed", scan) == frozenset()
    assert succeeded_clusters("cancelled", scan) == frozenset()


def test_a_finished_run_updates_runs_objects_duration_errors_and_last_success() -> None:
    metrics = Metrics(clock=lambda: T0)
    run = partial_run()
    metrics.run_started(run)
    metrics.run_finished(run)
    assert value(metrics, "proxbox_runs_started_total", kind="full") == 1
    assert value(metrics, "proxbox_runs_total", kind="full", status="partial") == 1
    assert value(metrics, "proxbox_objects_total", action="created") == 2
    assert value(metrics, "proxbox_objects_total", action="unchanged") == 5
    assert value(metrics, "proxbox_objects_total", action="failed") == 1
    assert value(metrics, "proxbox_objects_total", action="deleted") is None  # zero: never incremented
    assert value(metrics, "proxbox_run_duration_seconds_sum", kind="full") == 12.5
    assert value(metrics, "proxbox_run_duration_seconds_bucket", kind="full", le="15.0") == 1
    assert value(metrics, "proxbox_run_duration_seconds_bucket", kind="full", le="5.0") == 0
    assert value(metrics, "proxbox_run_errors_total", code="netbox_rejected", phase="creation") == 1
    assert value(metrics, "proxbox_last_run_timestamp_seconds", kind="full", status="partial") == T0
    assert value(metrics, "proxbox_last_successful_sync_timestamp_seconds", cluster="lab-a") == T0
    assert value(metrics, "proxbox_last_successful_sync_timestamp_seconds", cluster='lab "b"') is None


def test_exposition_is_prometheus_text_and_openmetrics_on_request() -> None:
    metrics = Metrics()
    metrics.run_finished(partial_run())
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"proxbox_runs", "proxbox_objects", "proxbox_run_duration_seconds", "proxbox_build_info"} <= names
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_registries_are_per_instance() -> None:
    a, b = Metrics(), Metrics()
    a.run_finished(partial_run())
    assert value(a, "proxbox_runs_total", kind="full", status="partial") == 1
    assert value(b, "proxbox_runs_total", kind="full", status="partial") is None


def test_watcher_drops_are_counted() -> None:
    metrics = Metrics()
    metrics.watcher_dropped("r1", "fell behind")
    metrics.watcher_dropped("r2", "fell behind")
    assert value(metrics, "proxbox_watcher_drops_total") == 2


# ---------------------------------------------------------------------------------------- scrape time


@attrs.define
class FakeRuns:
    active: Any = None
    queued: tuple[Any, ...] = ()
    watchers: int = 0


@attrs.define
class FakeBus:
    published: int = 0
    dropped: int = 0


@attrs.define
class FakePve:
    name: str
    stats: ClientStats


@attrs.define
class FakeNetBoxSettings:
    url: str = "https://netbox.example.com"


@attrs.define
class FakeNetBox:
    stats: RequestStats
    settings: FakeNetBoxSettings = attrs.Factory(FakeNetBoxSettings)


def pve(name: str, requests: int, retries: int, **errors: int) -> FakePve:
    stats = ClientStats(requests=requests, retries=retries, failures=1, relogins=2)
    stats.errors.update(errors)
    return FakePve(name=name, stats=stats)


def netbox(**by_method: int) -> FakeNetBox:
    stats = RequestStats()
    for method, n in by_method.items():
        for _ in range(n):
            stats.record(method)
    return FakeNetBox(stats=stats)


def test_state_is_read_at_scrape_time() -> None:
    metrics = Metrics()
    runs = FakeRuns(active=make_run(kind="vms"), queued=(object(),), watchers=3)
    bus = FakeBus(published=10, dropped=1)
    clients = [pve("lab-a", 40, 2, timeout=2), netbox(get=7, post=2)]
    metrics.bind(runs=runs, bus=bus, connections=lambda: 4, clients=lambda: clients)
    assert value(metrics, "proxbox_run_in_progress", kind="vms") == 1
    assert value(metrics, "proxbox_run_in_progress", kind="full") == 0
    assert value(metrics, "proxbox_runs_queued") == 1
    assert value(metrics, "proxbox_watchers") == 3
    assert value(metrics, "proxbox_connections") == 4
    assert value(metrics, "proxbox_frames_published_total") == 10
    assert value(metrics, "proxbox_frames_dropped_total") == 1
    assert value(metrics, "proxbox_proxmox_requests_total", endpoint="lab-a", method="GET") == 40
    assert value(metrics, "proxbox_proxmox_retries_total", endpoint="lab-a") == 2
    assert value(metrics, "proxbox_proxmox_failures_total", endpoint="lab-a") == 1
    assert value(metrics, "proxbox_proxmox_relogins_total", endpoint="lab-a") == 2
    assert value(metrics, "proxbox_proxmox_request_errors_total", endpoint="lab-a", kind="timeout") == 2
    url = "https://netbox.example.com"
    assert value(metrics, "proxbox_netbox_requests_total", endpoint=url, method="GET") == 7
    assert value(metrics, "proxbox_netbox_requests_total", endpoint=url, method="POST") == 2

    runs.watchers = 0  # the next scrape sees the new state
    bus.dropped = 2
    assert value(metrics, "proxbox_watchers") == 0
    assert value(metrics, "proxbox_frames_dropped_total") == 2


def test_a_broken_client_source_does_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> list[Any]:
        raise RuntimeError("engine changed shape")

    metrics.bind(runs=FakeRuns(), bus=FakeBus(), clients=broken)
    body, _ = metrics.render(None)
    assert b"proxbox_runs_queued 0.0" in body


def test_clients_are_found_on_the_engine() -> None:
    a, b, nb = pve("a", 1, 0), pve("b", 1, 0), netbox(get=1)

    @attrs.define  # slotted, like the sync engine
    class Engine:
        client: Any
        endpoints: list[Any]
        other: str = "x"

    assert clients_of(Engine(client=nb, endpoints=[a, b])) == [nb, a, b]

    class Explicit:
        def metrics_clients(self) -> list[Any]:
            return [a]

    assert clients_of(Explicit()) == [a]
    assert clients_of(None) == []
    assert sample_client(object()) is None


def test_clients_passed_to_discovery_are_found() -> None:
    a, nb = pve("a", 1, 0), netbox(get=1)

    @attrs.define
    class Engine:
        client: Any
        discover: Any

    def discover_all(settings: Any, *, clients: list[Any]) -> None:
        pass

    engine = Engine(client=nb, discover=functools.partial(discover_all, clients=[a]))
    assert clients_of(engine) == [nb, a]
