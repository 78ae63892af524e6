"""``proxbox sync`` as a user runs it: a config file, a subprocess, exit status, plan JSON, log lines."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netbox


def write_config(path: Path, netbox: Any, sim: Any, token: str | None = None) -> Path:
    lines = [
        "[netbox]",
        f'url = "{netbox.url}"',
        f'token = "{token or netbox.token}"',
        "retries = 1",
        "",
        "[logging]",
        'format = "json"',
        "",
    ]
    for px in sim.proxmox_settings():
        lines += [
            "[[proxmox]]",
            f'name = "{px.name}"',
            f'host = "{px.host}"',
            f"port = {px.port}",
            f'user = "{px.user}"',
            f'token_name = "{px.token_name}"',
            f'token_value = "{px.token_value}"',
            f'verify_ssl = "{px.verify_ssl}"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


async def proxbox(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxbox",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def log_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_dry_run_prints_the_plan_and_writes_nothing(sim: Any, netbox: Any, tmp_path: Path):
    config = write_config(tmp_path / "proxbox.toml", netbox, sim)
    code, out, err = await proxbox("sync", "--config", str(config), "--dry-run", "--plan-out", "-")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["summary"]["create"]["virtual_machine"] > 0
    assert {a["op"] for a in plan["actions"]} == {"create", "update"}
    assert netbox.change_count() == 0
    assert any(e["event"] == "sync.run_completed" for e in log_events(err))


async def test_full_sync_exits_zero_and_logs_structured_lines_then_a_rerun_writes_nothing(
    sim: Any, netbox: Any, tmp_path: Path
):
    config = write_config(tmp_path / "proxbox.toml", netbox, sim)
    code, out, err = await proxbox("sync", "full", "--config", str(config))
    assert code == 0, err
    events = log_events(out)
    phases = [e["phase"] for e in events if e["event"] == "sync.phase_started"]
    assert phases[:3] == ["discovery", "filtering", "planning"]
    assert any(e["event"] == "sync.item" and e["action"] == "created" for e in events)
    before = netbox.change_count()
    code, out, err = await proxbox("sync", "--config", str(config), "--plan-out", str(tmp_path / "plan.json"))
    assert code == 0, err
    assert netbox.change_count() == before
    assert json.loads((tmp_path / "plan.json").read_text())["actions"] == []
    (done,) = [e for e in log_events(out) if e["event"] == "sync.run_completed"]
    assert done["status"] == "succeeded" and "0 created, 0 updated, 0 deleted" in done["message"]


async def test_exit_status_is_non_zero_when_the_run_fails(sim: Any, netbox: Any, tmp_path: Path):
    config = write_config(tmp_path / "proxbox.toml", netbox, sim, token="0" * 40)
    code, out, _ = await proxbox("sync", "nodes", "--config", str(config))
    assert code == 1
    (done,) = [e for e in log_events(out) if e["event"] == "sync.run_completed"]
    assert done["status"] == "failed"
