"""PveClient's retry loop, re-login, pool bounds and error translation, with proxmoxer replaced by a
scripted fake (no sockets). proxmoxer against the simulator: tests/functional/test_discovery_client.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import requests
from proxmoxer import ResourceException

from proxbox.config import ProxmoxSettings
from proxbox.errors import (
    ProxmoxAuthError,
    ProxmoxBadRequest,
    ProxmoxMalformedResponse,
    ProxmoxNotFound,
    ProxmoxPermissionError,
    ProxmoxUnavailable,
)
from proxbox.proxmox.client import PveClient

SECRET = "2b1c7f0e-5d3a-4c1e-9a77-0e2f7d3c9b10"


def settings(**kw: Any) -> ProxmoxSettings:
    base: dict[str, Any] = {
        "name": "lab",
        "host": "127.0.0.1",
        "user": "netbox@pve",
        "token_name": "sync",
        "token_value": SECRET,
        "retries": 3,
        "backoff_s": 0.001,
        "concurrency": 2,
        "timeout": 1.0,
        "connect_timeout": 1.0,
    }
    base.update(kw)
    return ProxmoxSettings(**base)


class FakeSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        super().close()
        self.closed = True


class FakeApi:
    """Stands in for ProxmoxAPI: answers ``get`` from a shared script of outcomes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self._store = {"session": FakeSession()}

    def get(self, *parts: str, **params: Any) -> Any:
        return self.script.next(parts, params)


class Script:
    def __init__(self, *outcomes: Any, default: Any = None) -> None:
        self.outcomes = list(outcomes)
        self.default = default
        self.calls: list[tuple[tuple[str, ...], dict[str, Any], str]] = []
        self.lock = threading.Lock()
        self.builds: list[str] = []
        self.apis: list[FakeApi] = []

    def next(self, parts: tuple[str, ...], params: dict[str, Any]) -> Any:
        with self.lock:
            self.calls.append((parts, params, threading.current_thread().name))
            outcome = self.outcomes.pop(0) if self.outcomes else self.default
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def build(self) -> FakeApi:
        with self.lock:
            self.builds.append(threading.current_thread().name)
            api = FakeApi(self)
            self.apis.append(api)
            return api


def make_client(script: Script, **kw: Any) -> PveClient:
    client = PveClient(settings(**kw))
    client._build = script.build  # type: ignore[method-assign]
    return client


def http(status: int, reason: str = "") -> ResourceException:
    return ResourceException(status, "status", reason, errors=None)


async def test_a_transient_failure_is_retried_and_recovers():
    script = Script(
        http(595, "No route to host"), requests.exceptions.ConnectionError("reset"), [{"vmid": 100}]
    )
    async with make_client(script) as client:
        assert await client.get("nodes", "pve1", "qemu") == [{"vmid": 100}]
        assert (client.stats.requests, client.stats.retries) == (3, 2)
        assert client.stats.errors == {"595": 1, "connection": 1}


async def test_persistent_failure_becomes_a_typed_error_after_the_configured_attempts():
    script = Script(default=http(503, "Service Unavailable"))
    async with make_client(script, retries=4) as client:
        with pytest.raises(ProxmoxUnavailable) as info:
            await client.get("nodes", "pve1", "qemu")
    assert len(script.calls) == 4
    err = info.value
    assert err.context == {
        "endpoint": "lab",
        "path": "/nodes/pve1/qemu",
        "status": 503,
        "attempts": 4,
        "kind": "503",
    }
    assert SECRET not in str(err) and SECRET not in repr(err.as_dict())


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProxmoxBadRequest), (403, ProxmoxPermissionError), (501, ProxmoxNotFound)],
)
async def test_client_errors_fail_at_once(status, error):
    script = Script(default=http(status, "nope"))
    async with make_client(script) as client:
        with pytest.raises(error):
            await client.get("nodes", "pve1", "qemu", 100, "config")
    assert len(script.calls) == 1


async def test_a_401_rebuilds_the_api_once_and_retries():
    script = Script(http(401, "authentication failure"), {"version": "9.1.2"})
    async with make_client(script, concurrency=1) as client:
        assert await client.version() == {"version": "9.1.2"}
        assert client.stats.relogins == 1
    assert len(script.builds) == 2  # the first login, then the re-login


async def test_a_second_401_is_an_auth_error():
    script = Script(default=http(401, "authentication failure"))
    async with make_client(script) as client:
        with pytest.raises(ProxmoxAuthError) as info:
            await client.get("version")
    assert len(script.calls) == 2
    assert info.value.context["attempts"] == 2


async def test_known_no_data_answer_returns_none_without_retry():
    script = Script(default=http(500, "QEMU guest agent is not running"))
    async with make_client(script) as client:
        assert await client.get("nodes", "pve1", "qemu", 100, "agent", "network-get-interfaces") is None
        assert client.stats.absent == 1
    assert len(script.calls) == 1


@pytest.mark.parametrize(
    "bad",
    [{"errors": b"<html>proxy</html>"}, {"not": "a list"}, KeyError("data"), TypeError("list indices")],
)
async def test_malformed_answers_are_retried_then_fail_as_malformed(bad):
    script = Script(default=bad)
    async with make_client(script) as client:
        with pytest.raises(ProxmoxMalformedResponse):
            await client.get("cluster", "resources")
    assert len(script.calls) == 3


async def test_malformed_answer_then_good_answer_recovers():
    script = Script({"errors": b"{truncated"}, [{"type": "cluster"}])
    async with make_client(script) as client:
        assert await client.get("cluster", "status") == [{"type": "cluster"}]


async def test_query_parameters_are_passed_and_none_values_dropped():
    script = Script(default={"a": 1})
    async with make_client(script) as client:
        await client.get("nodes", "pve1", "qemu", 100, "config", current=1, snapshot=None)
    assert script.calls[0][:2] == (("nodes", "pve1", "qemu", "100", "config"), {"current": 1})


async def test_path_parts_may_hold_slashes_and_still_get_their_shape_checked():
    script = Script(default={"not": "a list"})
    async with make_client(script) as client:
        with pytest.raises(ProxmoxMalformedResponse):
            await client.get("/nodes/pve1/", "qemu")
    assert script.calls[0][0] == ("nodes", "pve1", "qemu")


async def test_requests_run_in_the_endpoints_own_bounded_pool_with_one_api_per_thread():
    active = 0
    peak = 0
    lock = threading.Lock()

    def slow() -> list[int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return []

    script = Script(default=slow)
    async with make_client(script, concurrency=3) as client:
        await asyncio.gather(*(client.get("nodes", f"n{i}", "qemu") for i in range(24)))
    assert peak == 3
    threads = {name for _, _, name in script.calls}
    assert all(name.startswith("pve-lab") for name in threads)
    assert len(threads) == 3
    assert sorted(script.builds) == sorted(threads)  # built lazily, once, inside each worker


async def test_the_outer_guard_bounds_a_hung_call_and_keeps_its_slot_busy():
    release = threading.Event()

    def hang() -> Any:
        release.wait(5)
        return []

    script = Script(hang, [1], default=[2])
    client = make_client(script, concurrency=1, retries=2)
    client.guard_s = 0.1
    try:
        task = asyncio.ensure_future(client.get("nodes", "pve1", "qemu"))
        await asyncio.sleep(0.3)
        # the first attempt timed out, but its thread still holds the only slot: the retry waits for it
        assert not task.done()
        assert len(script.calls) == 1
        release.set()
        assert await task == [1]
        assert client.stats.errors == {"timeout": 1}
    finally:
        release.set()
        await client.close()


async def test_close_closes_every_session_and_later_calls_fail_fast():
    script = Script(default=[])
    client = make_client(script, concurrency=2)
    await asyncio.gather(*(client.get("nodes") for _ in range(6)))
    await client.close()
    assert script.apis and all(api._store["session"].closed for api in script.apis)
    with pytest.raises(ProxmoxUnavailable):
        await client.get("nodes")


async def test_cancelling_a_call_does_not_leak_its_slot():
    gate = threading.Event()
    script = Script(lambda: gate.wait(2) and [], default=[])
    async with make_client(script, concurrency=1) as client:
        task = asyncio.ensure_future(client.get("nodes"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        assert await asyncio.wait_for(client.get("nodes"), 2) == []


def pve_threads(name: str = "lab") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"pve-{name}_")]


async def test_worker_threads_start_with_the_client_and_end_with_it():
    """Started up front: starting a thread mid-run would block the loop until the new thread got the GIL."""
    client = make_client(Script(default=[]), concurrency=3)
    try:
        threads = pve_threads()
        assert len(threads) == 3  # before any call
    finally:
        await client.close()
    for thread in threads:
        await asyncio.to_thread(thread.join, 2)
    assert pve_threads() == []


async def test_calls_finishing_together_wake_the_loop_once():
    """Workers that finish while the loop is busy queue behind one wake-up (one self-pipe write)."""
    started = threading.Barrier(5)
    release = threading.Event()
    finished = threading.Barrier(5)

    def answer(i: int) -> Any:
        def run() -> list[int]:
            started.wait(2)
            release.wait(2)
            return [i]

        return run

    script = Script(*(answer(i) for i in range(4)))
    async with make_client(script, concurrency=4) as client:
        drains = 0
        real_drain = client._drain

        def counting_drain() -> None:
            nonlocal drains
            drains += 1
            real_drain()

        client._drain = counting_drain  # type: ignore[method-assign]
        real_completed = client._completed

        def completed(job: Any) -> None:
            real_completed(job)
            finished.wait(2)

        client._completed = completed  # type: ignore[method-assign]
        calls = asyncio.gather(*(client.get("nodes", f"n{i}", "qemu") for i in range(4)))
        await asyncio.to_thread(started.wait, 2)  # all four calls are in the workers
        release.set()
        # block the loop (on purpose) until all four workers have handed their result over
        finished.wait(2)
        results = await calls
    assert sorted(r[0] for r in results) == [0, 1, 2, 3]
    assert drains == 1
