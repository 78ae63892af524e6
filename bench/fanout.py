"""Fan-out benchmark: one run streamed to 1,000 concurrent WebSocket watchers.

    python bench/fanout.py [--watchers 1000] [--slow 10] [--frames 400] [--rate 20] [--frame-bytes 2048]

The server (the real ``create_app``, a scripted job instead of the sync engine) runs in its own process; this
process opens the watchers on ``/ws/runs/{id}``, plus ``--slow`` watchers that never read (raw sockets with a
tiny receive buffer, the way a stuck client looks to the server). The job waits until every watcher is
attached, then emits ``--frames`` frames at ``--rate`` frames/s (``--rate 0``: as fast as the loop lets it).

The bench server uses ``subscriber_buffer = 200`` (``--subscriber-buffer``; the service default is 2000) so
that the non-reading watchers overflow it within one run: with 2 KB frames and the 128 KiB socket send
buffer cap they are dropped (1013) about 330 frames in.

Printed: frames/s delivered to all watchers, p50/p99/max publish→receive latency (publish = the frame's
``ts``, stamped by the server at emit; receive = when this process read it; same clock), the server's RSS
(idle, peak, after), gap/duplicate checks, and what happened to the non-reading watchers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import sys
import tempfile
import time
from base64 import b64encode
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

SEQ_TS = re.compile(rb'"seq":(\d+),"ts":"([^"]+)"')


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------ server side


def serve_main(port: int, subscriber_buffer: int) -> None:
    """The server process: the real app, a bench job, and two bench-only routes (plan, stats)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aiohttp import web

    from proxbox.config import settings_from_dict
    from proxbox.events import OPERATION_OF_KIND, Counts, Item, ItemDone, PhaseStarted, Reporter, RunOutcome
    from proxbox.logsetup import configure_logging
    from proxbox.web.app import create_app
    from proxbox.web.keys import BUS

    raise_fd_limit()
    configure_logging("warning", "console")
    state: dict[str, Any] = {"plan": {"frames": 10, "rate": 0, "bytes": 200, "wait_watchers": 0}, "peak": 0}

    async def job(kind: Any, reporter: Reporter) -> RunOutcome:
        plan = state["plan"]
        op = OPERATION_OF_KIND[kind]
        deadline = time.monotonic() + 120
        watchers = reporter.watchers  # type: ignore[attr-defined]  # the server's Run is the reporter
        while watchers() < plan["wait_watchers"] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        total = plan["frames"]
        reporter.emit(PhaseStarted(operation=op, phase="creation", total=total))
        pad = "x" * max(0, plan["bytes"] - 330)
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = 1.0 / plan["rate"] if plan["rate"] else 0.0
        for i in range(total):
            if interval:
                delay = start + i * interval - loop.time()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)
            item = Item(
                kind="virtual_machine", name=f"vm-{i:05d}", cluster="bench", vmid=1000 + i, action="created"
            )
            reporter.emit(
                ItemDone(operation=op, phase="creation", item=item, done=i + 1, total=total, message=pad)
            )
        return RunOutcome(status="succeeded", counts=Counts(created=total))

    async def set_plan(request: web.Request) -> web.Response:
        state["plan"] = await request.json()
        state["peak"] = rss_kb()
        return web.json_response(state["plan"])

    async def stats(request: web.Request) -> web.Response:
        bus = request.app[BUS]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response(
            {
                "rss_kb": rss_kb(),
                "peak_rss_kb": state["peak"],
                "published": bus.published,
                "dropped": bus.dropped,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )

    async def sample_rss(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                state["peak"] = max(state["peak"], rss_kb())
                await asyncio.sleep(0.1)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    settings = settings_from_dict(
        {
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "state_dir": tempfile.mkdtemp(prefix="proxbox-bench-"),
                "subscriber_buffer": subscriber_buffer,
                "heartbeat_s": 30.0,
                "close_timeout_s": 2.0,
            },
            "netbox": {"url": "http://127.0.0.1:9", "token": "0" * 40},
        }
    )
    app = create_app(settings, job=job)
    app.router.add_post("/bench/plan", set_plan)
    app.router.add_get("/bench/stats", stats)
    app.cleanup_ctx.append(sample_rss)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# ------------------------------------------------------------------------------------------ client side


class Collector:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.frames = 0
        self.last_receive = 0.0
        self._ts: dict[int, float] = {}
        self.bad_sequences = 0
        self.completes = 0

    def ts_of(self, seq: int, raw: bytes) -> float:
        ts = self._ts.get(seq)
        if ts is None:
            ts = self._ts[seq] = datetime.fromisoformat(raw.decode()).timestamp()
        return ts


async def reader(session: aiohttp.ClientSession, url: str, out: Collector, attached: asyncio.Event) -> None:
    ws = await session.ws_connect(url, max_msg_size=0, compress=0)
    attached.set()
    expected = 1
    ok = True
    async for msg in ws:
        now = time.time()
        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
        m = SEQ_TS.search(data, 0, 120)
        if m is None:
            continue
        seq = int(m.group(1))
        out.latencies.append(now - out.ts_of(seq, m.group(2)))
        out.frames += 1
        out.last_receive = now
        ok &= seq == expected
        expected = seq + 1
        if b'"type":"complete"' in data[:20]:
            out.completes += 1
    if not ok:
        out.bad_sequences += 1


async def stuck_watcher(port: int, path: str) -> dict[str, Any]:
    """A client that completes the handshake, then never reads (4 KB receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)  # byte by byte: leave every frame unread in the kernel
    return {"sock": sock, "status": head.split(b" ", 2)[1].decode()}


def drain_stuck(sock: socket.socket) -> tuple[int, int | None, str]:
    """After the run: read what the server left for this client. Returns (bytes, close code, reason)."""
    sock.setblocking(True)
    sock.settimeout(2.0)
    buf = b""
    try:
        while chunk := sock.recv(1 << 20):
            buf += chunk
    except (TimeoutError, ConnectionResetError, OSError):
        pass
    code, reason = None, ""
    # find a close frame (opcode 0x8) from the end of the stream; frames are unmasked server → client
    i = 0
    while i + 2 <= len(buf):
        b1 = buf[i + 1] & 0x7F
        hdr = 2
        if b1 == 126:
            b1, hdr = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
        elif b1 == 127:
            b1, hdr = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
        if i + hdr + b1 > len(buf):
            break
        if buf[i] & 0x0F == 0x8 and b1 >= 2:
            payload = buf[i + hdr : i + hdr + b1]
            code, reason = int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace")
        i += hdr + b1
    return len(buf), code, reason


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def phase(
    session: aiohttp.ClientSession, base: str, port: int, args: argparse.Namespace, label: str, rate: float
) -> dict[str, Any]:
    plan = {
        "frames": args.frames,
        "rate": rate,
        "bytes": args.frame_bytes,
        "wait_watchers": args.watchers + args.slow,
    }
    await (await session.post(f"{base}/bench/plan", json=plan)).read()
    idle = await (await session.get(f"{base}/bench/stats")).json()
    started = await (await session.post(f"{base}/sync/full")).json()
    run_id = started["run"]["id"]
    url = f"ws://127.0.0.1:{port}/ws/runs/{run_id}"

    out = Collector()
    t0 = time.monotonic()
    client_cpu0 = _cpu()
    tasks = []
    for batch in range(0, args.watchers, 100):
        events = [asyncio.Event() for _ in range(min(100, args.watchers - batch))]
        tasks += [asyncio.create_task(reader(session, url, out, e)) for e in events]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    stuck = [await stuck_watcher(port, f"/ws/runs/{run_id}") for _ in range(args.slow)]
    connect_s = time.monotonic() - t0

    first_publish = time.time()
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    client_cpu = _cpu() - client_cpu0
    run = (await (await session.get(f"{base}/runs/{run_id}")).json())["run"]
    stats = await (await session.get(f"{base}/bench/stats")).json()
    stuck_results = [drain_stuck(s["sock"]) for s in stuck]
    for s in stuck:
        s["sock"].close()
    await asyncio.sleep(0.5)
    after = await (await session.get(f"{base}/bench/stats")).json()

    started_at = datetime.fromisoformat(run["started_at"]).timestamp()
    span = max(out.last_receive, first_publish) - max(started_at, first_publish)
    return {
        "label": label,
        "rate": rate,
        "connect_s": connect_s,
        "run": run,
        "out": out,
        "span_s": span,
        "idle_rss_kb": idle["rss_kb"],
        "peak_rss_kb": stats["peak_rss_kb"],
        "after_rss_kb": after["rss_kb"],
        "dropped": stats["dropped"] - idle["dropped"],
        "server_cpu_s": stats["cpu_s"] - idle["cpu_s"],
        "client_cpu_s": client_cpu,
        "stuck": stuck_results,
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    out: Collector = r["out"]
    frames_per_watcher = r["run"]["last_seq"]
    lat = out.latencies
    rate = f"{r['rate']:g}/s" if r["rate"] else "as fast as the loop allows"
    print(
        f"\n== {r['label']}: {args.watchers} watchers + {args.slow} non-reading, "
        f"{frames_per_watcher} frames/run of ~{args.frame_bytes} B, publish rate {rate}"
    )
    print(f"  connect {args.watchers + args.slow} sockets: {r['connect_s']:.2f} s")
    print(
        f"  delivered: {out.frames} frames in {r['span_s']:.2f} s = {out.frames / r['span_s']:,.0f} frames/s "
        f"({out.frames * args.frame_bytes / r['span_s'] / 1e6:,.1f} MB/s)"
    )
    print(
        f"  every reader got every frame, in order: {out.frames == frames_per_watcher * args.watchers}"
        f" (sequence errors: {out.bad_sequences}, completes: {out.completes}/{args.watchers})"
    )
    print(
        f"  publish->receive latency: p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, "
        f"max {max(lat) * 1000:.1f} ms, mean {statistics.fmean(lat) * 1000:.1f} ms"
    )
    print(
        f"  server RSS: idle {r['idle_rss_kb'] / 1024:.0f} MiB, peak {r['peak_rss_kb'] / 1024:.0f} MiB, "
        f"after {r['after_rss_kb'] / 1024:.0f} MiB"
    )
    print(f"  run: status {r['run']['status']}, duration {r['run']['duration_s']} s")
    print(
        f"  CPU: server {r['server_cpu_s']:.1f} s ({r['server_cpu_s'] / max(out.frames, 1) * 1e6:.1f} us per "
        f"delivered frame), watcher process {r['client_cpu_s']:.1f} s, over {r['span_s']:.1f} s wall"
    )
    codes: dict[str, int] = {}
    got = []
    for nbytes, code, reason in r["stuck"]:
        what = f"{code} {reason[:90]}" if code else "none (the connection was cut)"
        codes[what] = codes.get(what, 0) + 1
        got.append(nbytes)
    print(
        f"  non-reading watchers: {r['dropped']} dropped by the bus; bytes left in their sockets: "
        f"{min(got) if got else 0:,}..{max(got) if got else 0:,}"
    )
    for what, n in codes.items():
        print(f"    {n} x close {what}")


async def main(args: argparse.Namespace) -> None:
    print(f"fd limit: {raise_fd_limit()}  cpus: {os.cpu_count()}  load: {os.getloadavg()[0]:.2f}")
    port = args.port or _free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--port",
        str(port),
        "--subscriber-buffer",
        str(args.subscriber_buffer),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with asyncio.timeout(30):
                while True:
                    try:
                        await (await session.get(f"{base}/health")).read()
                        break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            results = [await phase(session, base, port, args, "paced", args.rate)]
            if args.burst:
                results.append(await phase(session, base, port, args, "burst", 0))
            for r in results:
                report(r, args)
            print(
                json.dumps(
                    [{k: v for k, v in r.items() if k not in ("out", "stuck", "run")} for r in results]
                )
            )
    finally:
        server.terminate()
        await server.wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--slow", type=int, default=10, help="watchers that never read")
    p.add_argument("--frames", type=int, default=400, help="frames per run")
    p.add_argument("--rate", type=float, default=20.0, help="frames/s published in the paced phase")
    p.add_argument("--burst", action=argparse.BooleanOptionalAction, default=True, help="also run unpaced")
    p.add_argument("--frame-bytes", type=int, default=2048)
    p.add_argument("--subscriber-buffer", type=int, default=200)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.serve:
        serve_main(ARGS.port, ARGS.subscriber_buffer)
    else:
        asyncio.run(main(ARGS))
