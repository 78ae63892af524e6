"""``proxbox demo --once`` end to end: the simulator, a real NetBox (the test one), the server, a full sync
shown live, and where to look next."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest

from tests.fixtures.netbox import NetBoxEnv


async def demo(*args: str, seconds: float = 240) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxbox",
        "demo",
        "--once",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.netbox
async def test_demo_syncs_the_simulator_into_netbox_and_says_where_to_look(netbox: NetBoxEnv) -> None:
    code, out, err = await demo(
        "--netbox-url",
        netbox.url,
        "--netbox-token",
        netbox.token,
        "--clusters",
        "1",
        "--nodes",
        "2",
        "--guests",
        "5",
    )
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "Proxmox VE simulator: 1 cluster, 2 nodes, 5 guests"
    m = re.search(r"^proxbox server: (http://127\.0\.0\.1:\d+) \(full sync (\S+) started\)$", out, re.M)
    assert m, out
    base, run_id = m.groups()
    # the sync, live: its phases as they happened, then the summary
    assert f"run {run_id}: full sync started on lab-a" in lines
    for phase in ("discovery", "planning", "creation"):
        assert any(line.startswith(f"[{phase}] started") for line in lines), phase
    summary = next(line for line in lines if line.startswith(f"run {run_id} "))
    assert summary.startswith(f"run {run_id} succeeded")
    assert f"  status page   {base}/status" in lines
    assert any(line.startswith(f"  NetBox        {netbox.url}") for line in lines)
    # and NetBox really holds the simulated guests now
    names = {vm.name for vm in netbox.api().virtualization.virtual_machines.all()}
    created = {m.group(1) for m in re.finditer(r"created virtual_machine (\S+) \(lab-a", out)}
    assert created and created <= names


async def test_demo_exits_1_when_the_sync_cannot_reach_netbox() -> None:
    code, out, _ = await demo(
        "--netbox-url",
        "http://127.0.0.1:9",
        "--netbox-token",
        "0123456789abcdef",
        "--clusters",
        "1",
        "--guests",
        "2",
    )
    assert code == 1
    assert "netbox_unavailable" in out
    assert re.search(r"^run \S+ failed", out, re.M)


async def test_demo_needs_both_netbox_url_and_token() -> None:
    code, _, err = await demo("--netbox-url", "http://127.0.0.1:9")
    assert code == 2
    assert "--netbox-token" in err


def test_demo_is_listed_in_the_cli(capsys: Any) -> None:
    from proxbox.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--once" in capsys.readouterr().out
