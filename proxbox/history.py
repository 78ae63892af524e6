"""Run history that survives a restart: one SQLite table under ``settings.server.state_dir``.

Each run is recorded when it is queued, when it starts and when it finishes (id, kind, trigger, state, status,
counts, times, the last seq and the final ``complete`` frame, so a finished run can still be "watched" after a
restart). All SQLite work happens on one dedicated thread, in submission order: :meth:`History.save`
never blocks the event loop and a later read always sees earlier saves. Runs that were not finished when the
process died are marked ``failed`` ("interrupted") at the next start. Only the newest ``limit`` finished runs
are kept.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from proxbox.errors import ConfigError
from proxbox.events import Counts, RunKind, RunStatus
from proxbox.logsetup import get_logger

log = get_logger(__name__)

RunState = Literal["queued", "running", "finished"]
DB_NAME = "runs.sqlite3"
INTERRUPTED = "interrupted: the server stopped before the run finished"

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    state       TEXT NOT NULL,
    status      TEXT,
    counts      TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    duration_s  REAL,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    final_frame BLOB
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
"""


@attrs.frozen(kw_only=True)
class RunRecord:
    id: str
    kind: RunKind
    trigger: str
    state: RunState
    status: RunStatus | None = None
    counts: Counts = attrs.field(factory=Counts)
    message: str = ""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    last_seq: int = 0
    final_frame: bytes | None = None  # the run's `complete` frame, as sent


def _row_to_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        kind=row["kind"],
        trigger=row["trigger"],
        state=row["state"],
        status=row["status"],
        counts=Counts(**json.loads(row["counts"])),
        message=row["message"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_s=row["duration_s"],
        last_seq=row["last_seq"],
        final_frame=bytes(row["final_frame"]) if row["final_frame"] is not None else None,
    )


class History:
    """SQLite-backed run history. ``path=":memory:"`` keeps it in memory (tests)."""

    def __init__(self, path: str | Path, *, limit: int = 500) -> None:
        self._path = str(path)
        self._limit = limit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxbox-history")
        self._db: sqlite3.Connection | None = None
        self._pending: set[Future[Any]] = set()

    @classmethod
    def in_state_dir(cls, state_dir: str, *, limit: int) -> History:
        return cls(Path(state_dir) / DB_NAME, limit=limit)

    @property
    def path(self) -> str:
        return self._path

    # -- runs on the history thread

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self._path != ":memory:":
                try:
                    Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                    db = sqlite3.connect(self._path)
                except (OSError, sqlite3.Error) as exc:
                    raise ConfigError(
                        "server.state_dir", f"cannot open run history {self._path}: {exc}"
                    ) from None
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            else:
                db = sqlite3.connect(self._path)
            db.row_factory = sqlite3.Row
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _open(self) -> int:
        db = self._connect()
        with db:
            cur = db.execute(
                "UPDATE runs SET state='finished', status='failed', message=?, "
                "finished_at=COALESCE(finished_at, started_at, created_at) WHERE state != 'finished'",
                (INTERRUPTED,),
            )
        return cur.rowcount

    def _save(self, rec: RunRecord) -> None:
        db = self._connect()
        with db:
            db.execute(
                "INSERT OR REPLACE INTO runs (id, kind, trigger, state, status, counts, message, created_at, "
                "started_at, finished_at, duration_s, last_seq, final_frame) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    rec.kind,
                    rec.trigger,
                    rec.state,
                    rec.status,
                    json.dumps(attrs.asdict(rec.counts)),
                    rec.message,
                    rec.created_at,
                    rec.started_at,
                    rec.finished_at,
                    rec.duration_s,
                    rec.last_seq,
                    rec.final_frame,
                ),
            )
            if rec.state == "finished":
                db.execute(
                    "DELETE FROM runs WHERE state = 'finished' AND id NOT IN "
                    "(SELECT id FROM runs ORDER BY created_at DESC LIMIT ?)",
                    (self._limit,),
                )

    def _get(self, run_id: str) -> RunRecord | None:
        row = self._connect().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row_to_record(row) if row else None

    def _list(self, limit: int, kind: str | None) -> list[RunRecord]:
        sql = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if kind:
            sql += " WHERE kind = ?"
            args = (kind,)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [_row_to_record(r) for r in self._connect().execute(sql, (*args, limit)).fetchall()]

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- event-loop side

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> int:
        """Create the table; mark runs a dead process left unfinished. Returns how many were marked."""
        interrupted = await self._call(self._open)
        if interrupted:
            log.warning("history.interrupted_runs", count=interrupted, path=self._path)
        return int(interrupted)

    def save(self, rec: RunRecord) -> None:
        """Record (insert or replace) without waiting; saves are applied in call order."""
        fut = self._executor.submit(self._save, rec)
        self._pending.add(fut)
        fut.add_done_callback(self._saved)

    def _saved(self, fut: Future[Any]) -> None:
        self._pending.discard(fut)
        exc = fut.exception()
        if exc is not None:
            log.error("history.save_failed", error=str(exc), path=self._path)

    async def get(self, run_id: str) -> RunRecord | None:
        return await self._call(self._get, run_id)  # type: ignore[no-any-return,unused-ignore]

    async def list(self, limit: int = 50, kind: str | None = None) -> list[RunRecord]:
        return await self._call(self._list, limit, kind)  # type: ignore[no-any-return,unused-ignore]

    async def flush(self) -> None:
        """Wait until every save submitted so far is on disk."""
        await self._call(lambda: None)

    async def close(self) -> None:
        await self.flush()
        await self._call(self._close)
        self._executor.shutdown(wait=True)
