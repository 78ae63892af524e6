"""``GET /metrics`` on a real server: runs, objects, watchers and dropped watchers, authentication."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxbox.sim import SimServer
from tests.fixtures.netbox import NetBoxEnv
from tests.fixtures.server import API_KEY, ScriptedJob, read_frames, wait_until


async def scrape(
    handle: Any, http: aiohttp.ClientSession
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(handle.url("/metrics"), headers=handle.headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def get(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_metrics_count_a_finished_run_and_its_objects(proxbox_server: Any) -> None:
    handle = await proxbox_server(job=ScriptedJob(items=3))
    async with aiohttp.ClientSession() as http:
        before = await scrape(handle, http)
        assert get(before, "proxbox_runs_total", kind="full", status="succeeded") is None
        async with http.post(handle.url("/sync/full")) as resp:
            run_id = (await resp.json())["run"]["id"]
        async with http.ws_connect(handle.ws_url(f"/ws/runs/{run_id}")) as ws:
            frames = await read_frames(ws, run_id=run_id)
        assert frames[-1]["status"] == "succeeded"
        await wait_until(lambda: handle.runs.active is None and not handle.runs.queued)
        after = await scrape(handle, http)
    assert get(after, "proxbox_runs_total", kind="full", status="succeeded") == 1
    assert get(after, "proxbox_runs_started_total", kind="full") == 1
    assert get(after, "proxbox_objects_total", action="created") == 3
    assert get(after, "proxbox_run_duration_seconds_count", kind="full") == 1
    assert get(after, "proxbox_last_successful_sync_timestamp_seconds", cluster="lab") is not None
    assert get(after, "proxbox_frames_published_total") == len(frames)
    assert get(after, "proxbox_run_in_progress", kind="full") == 0


async def test_metrics_show_the_run_in_progress_and_its_watchers(proxbox_server: Any) -> None:
    job = ScriptedJob(items=2)
    handle = await proxbox_server(job=job)
    job.hold.clear()
    async with aiohttp.ClientSession() as http:
        async with http.post(handle.url("/sync/vms")) as resp:
            run_id = (await resp.json())["run"]["id"]
        await asyncio.wait_for(job.started.wait(), 10)
        async with (
            http.ws_connect(handle.ws_url(f"/ws/runs/{run_id}")) as a,
            http.ws_connect(handle.ws_url(f"/ws/runs/{run_id}")) as b,
        ):
            await wait_until(lambda: handle.runs.watchers == 2)
            during = await scrape(handle, http)
            assert get(during, "proxbox_run_in_progress", kind="vms") == 1
            assert get(during, "proxbox_watchers") == 2
            assert get(during, "proxbox_connections") == 2
            job.hold.set()
            await read_frames(a, run_id=run_id)
            await read_frames(b, run_id=run_id)
        await wait_until(lambda: handle.runs.active is None)
        after = await scrape(handle, http)
    assert get(after, "proxbox_watchers") == 0
    assert get(after, "proxbox_run_in_progress", kind="vms") == 0


async def test_a_watcher_cut_off_for_falling_behind_is_counted(proxbox_server: Any) -> None:
    job = ScriptedJob(items=3)
    handle = await proxbox_server(job=job)
    job.hold.clear()
    async with aiohttp.ClientSession() as http:
        async with http.post(handle.url("/sync/full")) as resp:
            run_id = (await resp.json())["run"]["id"]
        await asyncio.wait_for(job.started.wait(), 10)
        slow = await handle.runs.attach(
            run_id, limit=1
        )  # a subscriber that never reads, with room for 1 frame
        job.hold.set()
        await wait_until(lambda: handle.runs.active is None)
        samples = await scrape(handle, http)
        handle.runs.detach(slow)
    assert get(samples, "proxbox_frames_dropped_total") == 1
    assert get(samples, "proxbox_watcher_drops_total") == 1


async def test_metrics_need_the_api_key_when_keys_are_configured(
    proxbox_server: Any, server_settings: Any
) -> None:
    handle = await proxbox_server(settings=server_settings(api_keys=[API_KEY]))
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.url("/metrics")) as resp:
            assert resp.status == 401
        samples = await scrape(handle, http)  # with the key
    assert get(samples, "proxbox_runs_queued") == 0


@pytest.mark.netbox
async def test_a_real_sync_shows_proxmox_and_netbox_requests_and_per_cluster_success(
    proxbox_server: Any, server_settings: Any, netbox: NetBoxEnv, sim_world: Any
) -> None:
    async with SimServer(sim_world(clusters=1, nodes=1, guests=3)) as sim:
        (endpoint,) = sim.endpoints
        settings = attrs.evolve(
            server_settings(netbox_url=netbox.url, netbox_token=netbox.token),
            proxmox=tuple(sim.proxmox_settings(retries=2, backoff_s=0.05)),
        )
        handle = await proxbox_server(settings=settings, real_engine=True)
        async with aiohttp.ClientSession() as http:
            async with http.post(handle.url("/sync/full")) as resp:
                run_id = (await resp.json())["run"]["id"]
            async with http.ws_connect(handle.ws_url(f"/ws/runs/{run_id}")) as ws:
                frames = await read_frames(ws, run_id=run_id, seconds=120)
            assert frames[-1]["status"] == "succeeded", frames[-1]
            await wait_until(lambda: handle.runs.active is None)
            samples = await scrape(handle, http)
    assert get(samples, "proxbox_proxmox_requests_total", endpoint=endpoint.name, method="GET") > 0
    assert get(samples, "proxbox_proxmox_retries_total", endpoint=endpoint.name) == 0
    nb_get = get(samples, "proxbox_netbox_requests_total", endpoint=netbox.url, method="GET")
    nb_post = get(samples, "proxbox_netbox_requests_total", endpoint=netbox.url, method="POST")
    assert nb_get and nb_post  # read the current state, then created objects
    assert get(samples, "proxbox_last_successful_sync_timestamp_seconds", cluster=endpoint.name) is not None
    assert get(samples, "proxbox_objects_total", action="created") == frames[-1]["counts"]["created"]


async def test_event_loop_lag_is_measured_and_a_stall_shows_in_its_histogram(proxbox_server: Any) -> None:
    handle = await proxbox_server(job=ScriptedJob(items=1))
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.6)  # a couple of ticks
        before = await scrape(handle, http)
        # the server shares this loop: stall it on purpose, long enough that the tick waiting through it is
        # at least 0.55 s late whenever in its 0.25 s sleep the stall begins
        time.sleep(0.8)  # noqa: ASYNC251
        await asyncio.sleep(0.6)
        after = await scrape(handle, http)
    count = "proxbox_event_loop_lag_seconds_count"
    assert (get(before, count) or 0) >= 1
    stalled_before = get(before, count) - (
        get(before, "proxbox_event_loop_lag_seconds_bucket", le="0.25") or 0
    )
    stalled_after = get(after, count) - (get(after, "proxbox_event_loop_lag_seconds_bucket", le="0.25") or 0)
    # the tick that waited through the stall (a loaded machine may add a late tick of its own)
    assert stalled_after >= stalled_before + 1
    assert (get(after, "proxbox_event_loop_lag_seconds_sum") or 0) - (
        get(before, "proxbox_event_loop_lag_seconds_sum") or 0
    ) >= 0.55
