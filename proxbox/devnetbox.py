"""A real, local NetBox for development, tests, benchmarks and ``proxbox demo``.

Everything is cached under ``$PROXBOX_CACHE`` (default ``~/.cache/proxbox``), keyed by NetBox version:

- ``netbox/<version>/venv``: NetBox from PyPI plus gunicorn, in a Python >= 3.12 virtualenv (NetBox's
  floor);
- ``netbox/<version>/root``: ``NETBOX_ROOT`` with ``conf/configuration.py``. The configuration reads the
  database name and Redis database numbers from environment variables, so one install serves many instances;
- ``netbox/<version>/migrated.dump``: a ``pg_dump`` of the migrated empty database (made once; ``migrate``
  takes ~9 minutes on 2 cores). A shipped seed dump (``shared/netbox-seed``) is used when present,
  else ``migrate`` runs;
- a *template database* ``proxbox_nb_tmpl_<version>_<cache hash>`` holding that schema plus an admin user
  and a v1 API token. A clean NetBox is ``CREATE DATABASE x TEMPLATE tmpl``: under a second.

PostgreSQL and Redis are the machine's own on 127.0.0.1 (installed with apt and started when missing, as
root).
NetBox itself runs under gunicorn bound to 127.0.0.1 only.

Two ways to use it:

- ``tools/netbox-dev up|down|status|reset|env`` (or ``python -m proxbox.devnetbox``): one long-lived
  instance on port 8801 (database ``proxbox_nb_dev``), for the demo and for poking around. ``up`` is
  idempotent.
- :class:`NetBoxHarness` from Python (the pytest fixtures): ``harness.start_instance()`` gives a private
  instance (its own database, Redis databases and port) that ``instance.reset()`` empties in about a second.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NETBOX_VERSION = os.environ.get("PROXBOX_NETBOX_VERSION", "4.7.3")
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ROLE = "proxbox_netbox"
PG_PASSWORD = "proxbox_netbox"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # local, loopback-only development instance
DEV_PORT = int(os.environ.get("PROXBOX_NETBOX_DEV_PORT", "8801"))
DEV_DB = "proxbox_nb_dev"
SLOTS = 7  # Redis databases 2..15, two per instance


class HarnessError(RuntimeError):
    """The local NetBox could not be provided; the message says what to do."""


def _log(msg: str) -> None:
    print(f"[netbox-dev] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("PROXBOX_CACHE", Path.home() / ".cache" / "proxbox"))


def _tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True, **kw: Any) -> str:
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------- local services


def _apt_install(*packages: str) -> None:
    if not _is_root():
        raise HarnessError(
            f"{', '.join(packages)} missing: install them (apt-get install {' '.join(packages)})"
        )
    _log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", *packages], env=env)


def ensure_postgres() -> None:
    if _tcp_open(PG_HOST, PG_PORT):
        return
    if not shutil.which("pg_ctlcluster"):
        _apt_install("postgresql", "libpq-dev")
    if not _is_root():
        raise HarnessError(
            "PostgreSQL is not listening on 127.0.0.1:5432; start it (pg_ctlcluster <ver> main start)"
        )
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: int(v) if v.isdigit() else 0)
    if not versions:
        raise HarnessError("no PostgreSQL cluster under /etc/postgresql")
    _log(f"starting PostgreSQL {versions[-1]}")
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
    for _ in range(60):
        if _tcp_open(PG_HOST, PG_PORT):
            return
        time.sleep(0.5)
    raise HarnessError("PostgreSQL did not start listening on 127.0.0.1:5432")


def ensure_redis() -> None:
    if _tcp_open(REDIS_HOST, REDIS_PORT):
        return
    if not shutil.which("redis-server"):
        _apt_install("redis-server")
    _log("starting redis-server on 127.0.0.1:6379")
    Path("/tmp/proxbox-redis").mkdir(exist_ok=True)
    _run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp/proxbox-redis",
        ],
    )
    for _ in range(40):
        if _tcp_open(REDIS_HOST, REDIS_PORT):
            return
        time.sleep(0.25)
    raise HarnessError("redis-server did not start on 127.0.0.1:6379")


def _psql_admin(sql: str) -> str:
    """Run SQL as a PostgreSQL superuser: over TCP as 'postgres' (trust), else via the local socket (peer)."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    attempts: list[list[str]] = [["psql", "-h", PG_HOST, "-U", "postgres", "-w"]]
    if _is_root() and shutil.which("runuser"):
        attempts.append(["runuser", "-u", "postgres", "--", "psql"])
    errors = []
    for base in attempts:
        proc = subprocess.run(
            [*base, "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True, env=env
        )
        if proc.returncode == 0:
            return proc.stdout
        errors.append(proc.stderr.strip())
    raise HarnessError("cannot run SQL as a PostgreSQL superuser: " + " | ".join(errors))


def _pg_env() -> dict[str, str]:
    return {
        **os.environ,
        "PGPASSWORD": PG_PASSWORD,
        "PGHOST": PG_HOST,
        "PGPORT": str(PG_PORT),
        "PGUSER": PG_ROLE,
    }


def _psql(sql: str, db: str = "postgres") -> str:
    return _run(["psql", "-v", "ON_ERROR_STOP=1", "-d", db, "-tAc", sql], env=_pg_env())


def ensure_role() -> None:
    exists = _psql_admin(f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}'").strip()
    if not exists:
        _log(f"creating PostgreSQL role {PG_ROLE}")
        _psql_admin(f"CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'")


def _db_exists(name: str) -> bool:
    return bool(_psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip())


def _drop_db(name: str) -> None:
    _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------- harness


def _find_python312() -> str:
    candidates = [os.environ.get("PROXBOX_NETBOX_PYTHON", ""), "python3.13", "python3.12"]
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python3") for p in sorted(pyenv.iterdir(), reverse=True)]
    for cand in filter(None, candidates):
        exe = shutil.which(cand) or (cand if Path(cand).exists() else None)
        if not exe:
            continue
        proc = subprocess.run(
            [exe, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and proc.stdout.strip() == "True":
            return exe
    raise HarnessError("NetBox needs Python >= 3.12: install python3.12 or set PROXBOX_NETBOX_PYTHON")


def _seed_dumps() -> list[Path]:
    """Shipped migrated dumps (a CI machine's shared/netbox-seed), if any: found next to the checkout."""
    found = []
    here = Path(__file__).resolve().parent.parent
    bases = [here.parent / "shared" / "netbox-seed"]
    if os.environ.get("PROXBOX_NETBOX_SEED_DIR"):
        bases.insert(0, Path(os.environ["PROXBOX_NETBOX_SEED_DIR"]))
    for base in bases:
        dump = base / f"netbox-{NETBOX_VERSION}.dump"
        if dump.is_file():
            found.append(dump)
    return found


@dataclass
class NetBoxInstance:
    """One running NetBox: its own database, Redis databases and gunicorn on 127.0.0.1:port."""

    harness: NetBoxHarness
    db: str
    port: int
    slot: int
    token: str
    process: subprocess.Popen[bytes] | None = None
    slot_lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Return to an empty NetBox (the template's state): re-clone the database, flush its caches."""
        self.harness.clone_database(self.db)
        self.harness.flush_redis(self.slot)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(
                    f"NetBox (gunicorn) exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                req = urllib.request.Request(
                    f"{self.url}/api/status/", headers={"Authorization": f"Token {self.token}"}
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise HarnessError(f"NetBox at {self.url} not ready after {timeout:.0f}s: {last}")

    @property
    def log_path(self) -> Path:
        return self.harness.dir / "logs" / f"{self.db}.log"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.slot_lock is not None:
            self.slot_lock.close()
            self.slot_lock = None

    def env(self) -> dict[str, str]:
        return {"NETBOX_URL": self.url, "NETBOX_TOKEN": self.token}


@dataclass
class NetBoxHarness:
    version: str = NETBOX_VERSION
    dir: Path = field(default_factory=lambda: cache_root() / "netbox" / NETBOX_VERSION)

    @property
    def venv(self) -> Path:
        return self.dir / "venv"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def template_db(self) -> str:
        # one template per cache directory (their secrets differ): two caches never clobber each other
        tag = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:8]
        return f"proxbox_nb_tmpl_{self.version.replace('.', '_')}_{tag}"

    @property
    def dump_path(self) -> Path:
        return self.dir / "migrated.dump"

    @property
    def secrets_path(self) -> Path:
        return self.dir / "secrets.json"

    # -- preparation (idempotent, serialized across processes by a lock) --------------------------------

    def prepare(self) -> None:
        """Everything short of starting a server: services, venv, configuration, template database."""
        with _file_lock(self.dir.parent / f".{self.version}.lock"):
            ensure_postgres()
            ensure_redis()
            ensure_role()
            self._ensure_venv()
            self._ensure_root()
            self._ensure_template()

    def _ensure_venv(self) -> None:
        marker = self.venv / ".proxbox-ready"
        if marker.exists():
            return
        if not shutil.which("pg_config"):
            _apt_install("libpq-dev")  # psycopg's C extension builds against it
        python = _find_python312()
        _log(f"installing NetBox {self.version} into {self.venv} (one time, ~2 min)")
        if self.venv.exists():
            shutil.rmtree(self.venv)
        _run([python, "-m", "venv", str(self.venv)])
        pip = str(self.venv / "bin" / "pip")
        _run(
            [pip, "install", "-q", "--disable-pip-version-check", f"netbox=={self.version}", "gunicorn"],
            timeout=1800,
        )
        marker.write_text(self.version)

    def _secrets(self) -> dict[str, str]:
        if self.secrets_path.exists():
            return dict(json.loads(self.secrets_path.read_text()))
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        data = {
            "secret_key": "".join(secrets.choice(alphabet) for _ in range(60)),
            "pepper": "".join(secrets.choice(alphabet) for _ in range(60)),
            "token": secrets.token_hex(20),  # a v1 token: 40 characters
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secrets_path.write_text(json.dumps(data))
        self.secrets_path.chmod(0o600)
        return data

    def _ensure_root(self) -> None:
        conf = self.root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (self.root / "static").mkdir(exist_ok=True)
        (self.root / "media").mkdir(exist_ok=True)
        (conf / "__init__.py").touch()
        s = self._secrets()
        text = f'''# Written by proxbox's NetBox harness (proxbox/devnetbox.py). Loopback-only instance.
import os

ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES = {{
    "default": {{
        "NAME": os.environ.get("PROXBOX_NB_DB", "{DEV_DB}"),
        "USER": "{PG_ROLE}",
        "PASSWORD": "{PG_PASSWORD}",
        "HOST": "{PG_HOST}",
        "PORT": "{PG_PORT}",
        "CONN_MAX_AGE": 300,
        "CONN_HEALTH_CHECKS": True,
    }}
}}
_slot = int(os.environ.get("PROXBOX_NB_SLOT", "0"))
REDIS = {{
    "tasks": {{"HOST": "{REDIS_HOST}", "PORT": {REDIS_PORT}, "DATABASE": 2 + 2 * _slot, "SSL": False}},
    "caching": {{"HOST": "{REDIS_HOST}", "PORT": {REDIS_PORT}, "DATABASE": 3 + 2 * _slot, "SSL": False}},
}}
SECRET_KEY = "{s["secret_key"]}"
API_TOKEN_PEPPERS = {{1: "{s["pepper"]}"}}
DEBUG = False
ISOLATED_DEPLOYMENT = True
CENSUS_REPORTING_ENABLED = False
RELEASE_CHECK_URL = None
LOGIN_REQUIRED = True
MAX_PAGE_SIZE = 5000
TIME_ZONE = "UTC"
'''
        path = conf / "configuration.py"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    def netbox_env(self, db: str, slot: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO"))}
        env.update(
            NETBOX_ROOT=str(self.root),
            PROXBOX_NB_DB=db,
            PROXBOX_NB_SLOT=str(slot),
            PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        return env

    def _manage(self, *args: str, db: str, timeout: float = 1800) -> str:
        return _run([str(self.venv / "bin" / "netbox"), *args], env=self.netbox_env(db), timeout=timeout)

    def _template_ready(self) -> bool:
        out = _psql(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            f"WHERE datname = '{self.template_db}'"
        ).strip()
        return out == self._template_stamp()

    def _template_stamp(self) -> str:
        token_hash = hashlib.sha256(self._secrets()["token"].encode()).hexdigest()[:12]
        return f"proxbox-template {self.version} {token_hash}"

    def _ensure_template(self) -> None:
        if _db_exists(self.template_db) and self._template_ready():
            return
        tmpl = self.template_db
        _drop_db(tmpl)
        _psql(f'CREATE DATABASE "{tmpl}" OWNER {PG_ROLE}')
        started = time.monotonic()
        sources = ([self.dump_path] if self.dump_path.is_file() else []) + _seed_dumps()
        restored = False
        for dump in sources:
            _log(f"restoring migrated schema from {dump}")
            proc = subprocess.run(
                ["pg_restore", "--no-owner", "--no-privileges", "-d", tmpl, str(dump)],
                env=_pg_env(),
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                restored = True
                break
            _log(f"restore failed ({proc.stderr.strip()[-300:]}); trying the next source")
            _drop_db(tmpl)
            _psql(f'CREATE DATABASE "{tmpl}" OWNER {PG_ROLE}')
        if not restored:
            _log(
                "running NetBox migrate on an empty database (one time per NetBox version, ~9 min on 2 cores)"
            )
        # applies everything on an empty database, nothing (or what is new) on a restored one
        self._manage("migrate", "--no-input", db=tmpl, timeout=3600)
        _log(f"schema ready in {time.monotonic() - started:.0f}s")
        s = self._secrets()
        script = (
            "from users.models import User, Token\n"
            f"u = User.objects.filter(username={ADMIN_USER!r}).first() or "
            f"User.objects.create_superuser({ADMIN_USER!r}, 'admin@example.invalid', {ADMIN_PASSWORD!r})\n"
            f"Token.objects.filter(user=u).delete()\n"
            f"Token(user=u, version=1, token={s['token']!r}, description='proxbox harness').save()\n"
        )
        self._manage("shell", "-c", script, db=tmpl)
        if not self.dump_path.is_file():
            tmp = self.dump_path.with_suffix(".tmp")
            _run(["pg_dump", "-Fc", "-f", str(tmp), "-d", tmpl], env=_pg_env())
            tmp.replace(
                self.dump_path
            )  # schema only as migrated (admin and token included; secrets are local)
        _psql(f"COMMENT ON DATABASE \"{tmpl}\" IS '{self._template_stamp()}'")

    # -- instances --------------------------------------------------------------------------------------

    def clone_database(self, db: str) -> None:
        if db == self.template_db:
            raise HarnessError("refusing to overwrite the template database")
        _drop_db(db)
        _psql(f'CREATE DATABASE "{db}" TEMPLATE "{self.template_db}" OWNER {PG_ROLE}')

    def flush_redis(self, slot: int) -> None:
        for index in (2 + 2 * slot, 3 + 2 * slot):
            with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as s:
                s.sendall(f"SELECT {index}\r\nFLUSHDB\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    reply += chunk
                if b"-ERR" in reply:
                    raise HarnessError(f"redis FLUSHDB {index} failed: {reply!r}")

    def _claim_slot(self) -> tuple[int, IO[str]]:
        """A Redis slot (1..SLOTS-1) held by this process while the instance lives (0: the dev instance)."""
        slots = Path(os.environ.get("PROXBOX_NETBOX_SLOTS", "/tmp/proxbox-netbox-slots"))  # machine-wide
        slots.mkdir(parents=True, exist_ok=True)
        for slot in range(1, SLOTS):
            fh = open(slots / f"{slot}.lock", "a+")  # noqa: SIM115 - held open while the instance lives
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return slot, fh
            except OSError:
                fh.close()
        raise HarnessError(f"all {SLOTS - 1} NetBox test slots are in use by other processes")

    def start_instance(
        self, db: str | None = None, port: int | None = None, workers: int = 3
    ) -> NetBoxInstance:
        """A private NetBox on a free port with a fresh database (call :meth:`prepare` first)."""
        slot, lock = self._claim_slot()
        db = db or f"proxbox_nb_s{slot}"
        self.clone_database(db)
        self.flush_redis(slot)
        self._stop_stale(db)  # a gunicorn left by a killed session that held this slot before
        port = port or free_port()
        inst = NetBoxInstance(
            self, db=db, port=port, slot=slot, token=self._secrets()["token"], slot_lock=lock
        )
        inst.process = self._spawn(db, slot, port, workers, inst.log_path, detach=False)
        try:
            inst.wait_ready()
        except BaseException:
            inst.stop()
            raise
        return inst

    def _spawn(
        self, db: str, slot: int, port: int, workers: int, log_path: Path, *, detach: bool
    ) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.venv / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            "3",
            "--preload",
            "--timeout",
            "300",
            "--graceful-timeout",
            "5",
            "--max-requests",
            "0",
            "--no-control-socket",  # one shared default path would make instances fight over it
            "--pid",
            str(self.dir / "run" / f"{db}.pid"),
            "netbox.wsgi",
        ]
        (self.dir / "run").mkdir(exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                cmd,
                env=self.netbox_env(db, slot),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
                # a private instance dies with the process that started it, even when that one is killed
                preexec_fn=None if detach else _die_with_parent,
            )

    def _stop_stale(self, db: str) -> None:
        pidfile = self.dir / "run" / f"{db}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    # -- the long-lived development instance ---------------------------------------------------------------

    def dev_instance(self) -> NetBoxInstance:
        return NetBoxInstance(self, db=DEV_DB, port=DEV_PORT, slot=0, token=self._secrets()["token"])

    def _dev_pid(self) -> int | None:
        pidfile = self.dir / "run" / f"{DEV_DB}.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def dev_up(self) -> NetBoxInstance:
        """Start (or reuse) the development instance; its data survives restarts until ``reset``."""
        self.prepare()
        inst = self.dev_instance()
        if self._dev_pid() is not None:
            inst.wait_ready(timeout=60)
            return inst
        if _tcp_open("127.0.0.1", DEV_PORT):
            raise HarnessError(f"port {DEV_PORT} is taken by something else (set PROXBOX_NETBOX_DEV_PORT)")
        if not _db_exists(DEV_DB):
            self.clone_database(DEV_DB)
            self.flush_redis(0)
        inst.process = self._spawn(DEV_DB, 0, DEV_PORT, 3, inst.log_path, detach=True)
        inst.wait_ready()
        inst.process = None  # detached: outlives this command; `down` stops it by pid
        return inst

    def dev_down(self) -> bool:
        pid = self._dev_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                return True
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        return True

    def dev_reset(self) -> NetBoxInstance:
        self.prepare()
        self.clone_database(DEV_DB)
        self.flush_redis(0)
        return self.dev_up()


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netbox-dev",
        description="A real local NetBox for proxbox development, tests and the demo (loopback only).",
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "reset", "env", "prepare"],
        help="up: start or reuse the dev instance and print NETBOX_URL/NETBOX_TOKEN; down: stop it; "
        "reset: empty its database; env: print the exports; prepare: install and build the template only",
    )
    args = parser.parse_args(argv)
    harness = NetBoxHarness()
    try:
        if args.action == "prepare":
            harness.prepare()
            return 0
        if args.action == "down":
            print("stopped" if harness.dev_down() else "not running")
            return 0
        if args.action == "status":
            running = harness._dev_pid() is not None
            print(
                f"NetBox {harness.version} dev instance: "
                + (f"running on {harness.dev_instance().url}" if running else "stopped")
            )
            return 0 if running else 3
        started = time.monotonic()
        if args.action == "reset":
            inst = harness.dev_reset()
        elif args.action == "env":
            inst = harness.dev_instance()
        else:
            inst = harness.dev_up()
        for key, value in inst.env().items():
            print(f"export {key}={value}")
        if args.action != "env":
            _log(
                f"NetBox {harness.version} ready at {inst.url} in {time.monotonic() - started:.1f}s "
                f"(UI login {ADMIN_USER}/{ADMIN_PASSWORD})"
            )
        return 0
    except HarnessError as exc:
        print(f"netbox-dev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
