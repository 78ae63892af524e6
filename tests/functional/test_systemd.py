"""The systemd unit (``systemd-analyze verify``) and the sd_notify protocol over real datagram sockets, up to
a real ``proxbox serve`` process that must say READY=1 only once its port accepts connections."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxbox.config import ServerSettings
from proxbox.sdnotify import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "proxbox.service"
EXAMPLE = ROOT / "deploy" / "proxbox.toml.example"
CREDENTIALS = "/run/credentials/proxbox.service/"


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (every occurrence kept, comments and sections skipped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|ms)?", value)
    assert m, value
    n = float(m.group(1))
    return {"ms": n / 1000, "min": n * 60}.get(m.group(2) or "s", n)


# ---------------------------------------------------------------------------------------------- the unit


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verify the shipped unit with only ExecStart's binary swapped for the installed ``proxbox`` (verify
    checks that the binary exists; /opt/proxbox is where docs/install.md puts it)."""
    exe = shutil.which("proxbox")
    assert exe, "the proxbox entry point is not installed (pip install -e .)"
    text = UNIT.read_text()
    assert "ExecStart=/opt/proxbox/bin/proxbox serve" in text
    copy = tmp_path / "proxbox.service"
    copy.write_text(text.replace("ExecStart=/opt/proxbox/bin/proxbox ", f"ExecStart={exe} "))
    assert copy.read_text().replace(exe, "/opt/proxbox/bin/proxbox") == text  # nothing else differs
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # clean: not even a warning


def test_verify_rejects_a_broken_unit(tmp_path: Path) -> None:
    """The verify test above can fail: a bad value is reported (on stderr, even with exit status 0)."""
    exe = shutil.which("proxbox")
    assert exe
    broken = UNIT.read_text().replace("ExecStart=/opt/proxbox/bin/proxbox ", f"ExecStart={exe} ")
    broken = broken.replace("ProtectSystem=strict", "ProtectSystem=stritc")
    copy = tmp_path / "proxbox.service"
    copy.write_text(broken)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert "stritc" in proc.stderr


def test_unit_is_a_sandboxed_notify_service() -> None:
    unit = unit_settings(UNIT.read_text())
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "StateDirectory": "proxbox",
        "ConfigurationDirectory": "proxbox",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",  # AF_UNIX: the notify socket
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], (key, unit.get(key))
    assert seconds(unit["WatchdogSec"][0]) > 0
    assert unit["Environment"].count("PROXBOX_CONFIG=%E/proxbox/proxbox.toml") == 1


def test_stop_timeout_outlasts_the_graceful_drain() -> None:
    """SIGTERM drains: the run may finish (drain_grace_s), is then cancelled (cancel_grace_s), and watchers
    get their last frame (close_timeout_s). systemd must not SIGKILL before all of that."""
    unit = unit_settings(UNIT.read_text())
    defaults = ServerSettings()
    drain = defaults.drain_grace_s + defaults.cancel_grace_s + defaults.close_timeout_s
    assert seconds(unit["TimeoutStopSec"][0]) > drain


def test_every_credential_the_example_config_reads_is_loaded_by_the_unit() -> None:
    unit = unit_settings(UNIT.read_text())
    loaded = {spec.partition(":")[0] for spec in unit.get("LoadCredential", [])}
    wanted = set(re.findall(re.escape(CREDENTIALS) + r"([\w.-]+)", EXAMPLE.read_text()))
    assert wanted >= {"netbox-token"} and len(wanted) >= 2  # the NetBox token and a Proxmox token secret
    assert wanted <= loaded, f"credentials read by the config but not loaded by the unit: {wanted - loaded}"


# ------------------------------------------------------------------------------------- the notify socket


@contextlib.contextmanager
def notify_socket(abstract: bool = False) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's; yields it and the NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmp = None
    try:
        if abstract:
            name = f"proxbox-test-{secrets.token_hex(6)}"
            sock.bind("\0" + name)
            value = "@" + name
        else:
            tmp = tempfile.mkdtemp(prefix="pbx-", dir="/tmp")  # short: AF_UNIX paths are limited to 108 bytes
            value = os.path.join(tmp, "notify")
            sock.bind(value)
        sock.settimeout(0.2)
        yield sock, value
    finally:
        sock.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def receive(sock: socket.socket, seconds: float = 5.0) -> dict[str, str] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        return dict(line.split("=", 1) for line in data.decode().splitlines())
    return None


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_datagrams_to_path_and_abstract_sockets(abstract: bool) -> None:
    with notify_socket(abstract) as (sock, address):
        notifier = Notifier(address)
        assert notifier.ready("listening on 127.0.0.1:8800")
        msg = receive(sock)
        assert msg == {"READY": "1", "STATUS": "listening on 127.0.0.1:8800", "MAINPID": str(os.getpid())}
        assert notifier.watchdog()
        assert receive(sock) == {"WATCHDOG": "1"}
        assert notifier.stopping("draining")
        assert receive(sock) == {"STOPPING": "1", "STATUS": "draining"}
        notifier.close()


def test_notifier_survives_a_socket_that_is_gone() -> None:
    notifier = Notifier("/tmp/proxbox-no-such-notify-socket")
    assert notifier.enabled
    assert notifier.ready() is False  # logged, never raised
    assert notifier.sent == 0
    notifier.close()


# ---------------------------------------------------------------------------------------- proxbox serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "proxbox.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
state_dir = "{tmp_path / "state"}"
drain_grace_s = 5.0
[netbox]
url = "http://127.0.0.1:9"
token = "0123456789abcdef0123456789abcdef01234567"
[logging]
format = "json"
"""
    )
    return config


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def serve(config: Path, notify: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXBOX_", "WATCHDOG_"))}
    full_env.update(NOTIFY_SOCKET=notify, **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxbox", "--config", str(config), "serve"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_serve_sends_ready_only_once_its_port_accepts_connections(tmp_path: Path) -> None:
    """READY=1 arrives; the process is frozen (SIGSTOP) the moment it does, and the port must already accept
    connections: a READY sent before listen() would leave nothing listening while the process is stopped."""
    port = free_port()
    config = write_config(tmp_path, port)
    with notify_socket(abstract=True) as (sock, address), serve(config, address) as proc:
        msg = receive(sock, seconds=60)
        assert msg is not None, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            assert msg["READY"] == "1"
            assert msg["MAINPID"] == str(proc.pid)
            assert msg["STATUS"].startswith(f"listening on 127.0.0.1:{port}")
            assert accepts(port), "READY=1 was sent before the server listened"
        finally:
            os.kill(proc.pid, signal.SIGCONT)

        proc.send_signal(signal.SIGTERM)
        stopping = receive(sock, seconds=10)
        assert stopping is not None and stopping["STOPPING"] == "1"
        assert proc.wait(30) == 0


def test_serve_never_says_ready_when_it_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        with notify_socket() as (sock, address), serve(config, address) as proc:
            assert proc.wait(60) != 0
            assert receive(sock, seconds=0.5) is None


def test_serve_never_says_ready_with_an_invalid_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    config.write_text(config.read_text().replace('url = "http://127.0.0.1:9"', 'url = "netbox.example.com"'))
    with notify_socket() as (sock, address), serve(config, address) as proc:
        assert proc.wait(60) == 2  # config error
        assert receive(sock, seconds=0.5) is None
        assert proc.stderr is not None and b"netbox.url" in proc.stderr.read()


def test_serve_status_lines_follow_the_runs_and_watchdog_pings(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    with notify_socket() as (sock, address), serve(config, address, WATCHDOG_USEC="400000") as proc:
        ready = receive(sock, seconds=60)
        assert ready is not None and ready["READY"] == "1"
        assert "idle" in ready["STATUS"]
        pings = [receive(sock, seconds=5) for _ in range(2)]
        assert pings == [{"WATCHDOG": "1"}, {"WATCHDOG": "1"}]

        req = urllib.request.Request(f"http://127.0.0.1:{port}/sync/full", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            run_id = json.load(resp)["run"]["id"]
        statuses = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = receive(sock, seconds=1)
            if msg and "STATUS" in msg:
                statuses.append(msg["STATUS"])
                if "last:" in msg["STATUS"]:
                    break
        assert statuses[0] == f"running full sync {run_id}"
        # no NetBox at 127.0.0.1:9: the run fails, and the status says so
        assert f"last: full sync {run_id} failed" in statuses[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
