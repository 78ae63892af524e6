"""``proxbox sim`` as a subprocess: one JSON line on stdout, then it serves until SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import requests


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxbox",
            "sim",
            "--seed",
            "1",
            "--clusters",
            "2",
            "--nodes",
            "2",
            "--guests",
            "5",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, rest


def test_cli_prints_one_json_line_and_serves_until_sigterm(tmp_path):
    world_out = tmp_path / "world.json"
    proc = _start(
        "--standalone",
        "1",
        "--control",
        "--world-out",
        str(world_out),
        "--token",
        "netbox@pve!sync=abc-123",
        "--password",
        "pw",
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["event"] == "sim.ready"
        assert [e["name"] for e in info["endpoints"]] == ["lab-a", "lab-b", "pve-s1"]
        assert info["credentials"] == {
            "user": "root@pam",
            "password": "pw",
            "token_id": "netbox@pve!sync",
            "token_secret": "abc-123",
            "token": "netbox@pve!sync=abc-123",
        }
        ep = info["endpoints"][1]
        headers = {"Authorization": "PVEAPIToken=netbox@pve!sync=abc-123"}
        r = requests.get(f"{ep['url']}/cluster/status", headers=headers, verify=ep["ca_path"], timeout=5)
        assert r.status_code == 200 and r.json()["data"][0]["name"] == "lab-b"
        control = info["control"]
        r = requests.get(f"{control['url']}/world", headers=headers, verify=info["ca_path"], timeout=5)
        assert r.json()["summary"]["pve-s1"] == {"nodes": 1, "guests": 5}
        assert json.loads(world_out.read_text())["summary"] == r.json()["summary"]
    finally:
        code, rest = _stop(proc)
    assert code == 0
    assert rest == ""  # exactly one line on stdout


def _free_block(n: int) -> int:
    """A port P with P..P+n-1 all free right now (another process may still take one before we do)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n >= 65536:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise AssertionError(f"no block of {n} free ports found")


def test_cli_uses_consecutive_ports_from_base_port():
    for _ in range(5):  # a port of the block taken between the probe and the start: try another block
        base = _free_block(2)
        with _start("--base-port", str(base)) as proc:
            line = proc.stdout.readline()
            if not line:
                assert proc.wait(timeout=20) != 0
                assert "cannot listen" in proc.stderr.read()
                continue
            try:
                info = json.loads(line)
                assert [e["port"] for e in info["endpoints"]] == [base, base + 1]
                assert info["control"] is None
            finally:
                code, _ = _stop(proc)
            assert code == 0
            return
    raise AssertionError("every block of free ports was taken before the simulator could listen")


def test_cli_rejects_bad_arguments_with_exit_code_2():
    proc = subprocess.run(
        [sys.executable, "-m", "proxbox", "sim", "--guests", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "guests per endpoint" in proc.stderr
    assert proc.stdout == ""
