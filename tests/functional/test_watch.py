"""``proxbox watch`` against a real server: the CLI's output and exit status, and reconnecting through a TCP
proxy that cuts the connection mid-run (resume with ``since``, every frame exactly once)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest

from proxbox.errors import RunNotFound, ServerUnreachable
from proxbox.events import (
    OPERATION_OF_KIND,
    Counts,
    Item,
    ItemDone,
    ItemFailed,
    PhaseCompleted,
    PhaseStarted,
    Reporter,
    RunKind,
    RunOutcome,
)
from proxbox.watch import Backoff, RunView, RunWatcher
from tests.fixtures.server import API_KEY, ScriptedJob, wait_until


async def start_run(handle: Any, kind: str = "full") -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(handle.url(f"/sync/{kind}"), headers=handle.headers) as resp,
    ):
        assert resp.status == 202
        return str((await resp.json())["run"]["id"])


async def watch_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxbox",
        "watch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@attrs.define
class PartialJob:
    """One VM created, one rejected by NetBox: the run ends ``partial``."""

    async def __call__(self, kind: RunKind, reporter: Reporter) -> RunOutcome:
        op = OPERATION_OF_KIND[kind]
        reporter.emit(PhaseStarted(operation=op, phase="creation", total=2))
        vm = Item(kind="virtual_machine", name="web-1", cluster="lab", vmid=101, action="created")
        reporter.emit(ItemDone(operation=op, phase="creation", item=vm, done=1, total=2))
        reporter.emit(
            ItemFailed(
                operation=op,
                phase="creation",
                error="netbox_rejected",
                error_class="NetBoxRejected",
                detail="name already exists",
                item=Item(kind="virtual_machine", name="web-2", cluster="lab", vmid=102),
            )
        )
        counts = Counts(created=1, failed=1)
        reporter.emit(PhaseCompleted(operation=op, phase="creation", counts=counts, duration_s=0.1))
        return RunOutcome(status="partial", counts=counts)


# ------------------------------------------------------------------------------------------------ CLI


async def test_watch_prints_progress_and_summary_and_exits_0_for_a_successful_run(
    proxbox_server: Any,
) -> None:
    job = ScriptedJob(items=3)
    handle = await proxbox_server(job=job)
    job.hold.clear()
    run_id = await start_run(handle)
    cli = asyncio.ensure_future(watch_cli(handle.url("/"), "--run", run_id))
    await wait_until(lambda: handle.runs.watchers == 1)  # attached while the run is held
    job.hold.set()
    code, out, _ = await cli
    assert code == 0, out
    lines = out.splitlines()
    assert f"run {run_id}: full sync started" in lines
    assert "[creation] started (3 items)" in lines
    assert "[creation] 2/3 created virtual_machine vm1 (lab, vmid 101)" in lines
    assert any(line.startswith("[creation] completed") and "created 3" in line for line in lines)
    assert lines[-1].startswith(f"run {run_id} succeeded in ") and lines[-1].endswith("created 3")


async def test_watch_exits_1_and_shows_errors_for_a_partial_run(proxbox_server: Any) -> None:
    handle = await proxbox_server(job=PartialJob())
    run_id = await start_run(handle, "vms")
    code, out, _ = await watch_cli(handle.url("/"), "--run", "latest")  # finished: replayed from the log
    assert code == 1
    assert (
        "ERROR [creation] netbox_rejected: virtual_machine web-2 (lab, vmid 102): name already exists"
        in out.splitlines()
    )
    assert f"run {run_id} partial" in out
    assert "errors: netbox_rejected x1" in out


async def test_watch_exits_2_when_the_api_key_is_refused(proxbox_server: Any, server_settings: Any) -> None:
    handle = await proxbox_server(settings=server_settings(api_keys=[API_KEY]), job=ScriptedJob(items=1))
    run_id = await start_run(handle)
    code, _, err = await watch_cli(handle.url("/"), "--run", run_id, "--api-key", "wrong")
    assert code == 2
    assert "API key" in err
    code, out, _ = await watch_cli(handle.url("/"), "--run", run_id, "--api-key", API_KEY)
    assert code == 0, out


async def test_watch_exits_1_for_an_unknown_run_and_2_for_a_bad_url(proxbox_server: Any) -> None:
    handle = await proxbox_server()
    code, _, err = await watch_cli(handle.url("/"), "--run", "20260101T000000Z-000000")
    assert code == 1
    assert "run_not_found" in err
    code, _, err = await watch_cli("ftp://example.com", "--run", "latest")
    assert code == 2


async def test_watch_gives_up_on_an_unreachable_server_after_its_retries() -> None:
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        code, _, err = await watch_cli(f"http://127.0.0.1:{port}", "--retries", "1")
    assert code == 1
    assert "server_unreachable" in err


# ------------------------------------------------------------------------------------------ reconnecting


@attrs.define
class Recorder:
    seqs: list[int] = attrs.Factory(list)
    notices: list[str] = attrs.Factory(list)
    finished: RunView | None = None

    def start(self, target: str) -> None:
        pass

    def frame(self, view: RunView, frame: Any) -> None:
        self.seqs.append(frame["seq"])

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def finish(self, view: RunView) -> None:
        self.finished = view


@attrs.define
class Proxy:
    """A TCP proxy in front of the server whose connections the test can cut."""

    target_port: int
    server: asyncio.Server | None = None
    links: list[asyncio.StreamWriter] = attrs.Factory(list)
    connections: int = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self.links:
            w.transport.abort()
        self.links.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy_to() -> AsyncIterator[Any]:
    proxies: list[Proxy] = []

    async def make(port: int) -> Proxy:
        proxy = Proxy(port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        await p.stop()


async def test_watch_reconnects_after_a_cut_and_gets_every_frame_once(
    proxbox_server: Any, proxy_to: Any
) -> None:
    job = ScriptedJob(items=6)
    handle = await proxbox_server(job=job)
    job.hold.clear()
    run_id = await start_run(handle)
    proxy = await proxy_to(handle.server.port)
    recorder = Recorder()
    watcher = RunWatcher(
        f"http://127.0.0.1:{proxy.port}",
        "latest",
        renderer=recorder,
        backoff=Backoff(attempts=5, start_s=0.05),
    )
    following = asyncio.ensure_future(watcher.follow())
    await wait_until(lambda: recorder.seqs == [1, 2])  # run started, phase started; the job is held

    proxy.cut()  # the network drops mid-run
    job.hold.set()  # frames 3.. are published while (or before) the watcher reconnects
    view = await asyncio.wait_for(following, 30)

    assert view.run_id == run_id  # "latest" was pinned to the run it resolved to
    assert recorder.seqs == list(range(1, view.last_seq + 1))  # all, in order, none twice
    assert view.final is not None and view.final["status"] == "succeeded"
    assert view.phases["creation"].done == 6
    assert view.gaps == []
    assert watcher.connections == 2 and proxy.connections == 2
    assert any("reconnecting" in n and "after seq 2" in n for n in recorder.notices)
    assert recorder.finished is view


async def test_watch_keeps_retrying_while_the_server_is_away(proxbox_server: Any, proxy_to: Any) -> None:
    job = ScriptedJob(items=2)
    handle = await proxbox_server(job=job)
    job.hold.clear()
    await start_run(handle)
    proxy = await proxy_to(handle.server.port)
    port = proxy.port
    recorder = Recorder()
    watcher = RunWatcher(
        f"http://127.0.0.1:{port}",
        "latest",
        renderer=recorder,
        backoff=Backoff(attempts=50, start_s=0.02, max_s=0.1),
    )
    following = asyncio.ensure_future(watcher.follow())
    await wait_until(lambda: len(recorder.seqs) == 2)
    await proxy.stop()  # refused connections for a while
    await wait_until(lambda: sum("reconnecting" in n for n in recorder.notices) >= 3)
    job.hold.set()
    back = Proxy(handle.server.port)
    back.server = await asyncio.start_server(back._link, "127.0.0.1", port)
    try:
        view = await asyncio.wait_for(following, 30)
    finally:
        await back.stop()
    assert view.status == "succeeded"
    assert recorder.seqs == list(range(1, view.last_seq + 1))


async def test_watcher_raises_typed_errors_it_cannot_retry(proxbox_server: Any) -> None:
    handle = await proxbox_server()
    with pytest.raises(RunNotFound):
        await RunWatcher(handle.url("/"), "no-such-run", renderer=Recorder()).follow()
    with pytest.raises(ServerUnreachable):
        await RunWatcher(
            "http://127.0.0.1:9", "latest", renderer=Recorder(), backoff=Backoff(attempts=1, start_s=0.01)
        ).follow()
