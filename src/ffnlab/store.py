"""The run store: one SQLite file (`results/ffnlab.db`) recording every training run, experiment
and analysis — its config, code version, seed, status, timings, metric series and artifacts.

WAL journal and a busy timeout let several processes write at once; each write is one short
`BEGIN IMMEDIATE` transaction on a fresh connection, so a crashed writer never holds a lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffnlab.errors import FFNLabError
from ffnlab.results import code_version, results_dir

STATUSES = ("running", "finished", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    wall_seconds REAL,
    summary TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (kind, config_hash, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, key, step);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


COLUMNS = {"runs": {"id", "kind", "name", "config", "config_hash", "code_version", "seed", "status", "started",
                    "finished", "wall_seconds", "summary", "error"},
           "metrics": {"run_id", "key", "step", "value"}, "artifacts": {"run_id", "name", "path"}}


def config_hash(config: Any) -> str:
    """A stable hash of a JSON-serialisable config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    name: str
    config: dict[str, Any]
    config_hash: str
    code_version: str
    seed: int | None
    status: str
    started: float
    finished: float | None
    wall_seconds: float | None
    summary: dict[str, Any]
    error: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        d = {k: row[k] for k in COLUMNS["runs"]}  # a newer store may have more columns
        try:
            d["config"], d["summary"] = json.loads(d["config"]), json.loads(d["summary"])
        except (TypeError, json.JSONDecodeError) as err:
            raise FFNLabError(f"run {d.get('id')} in the run store is damaged: {err}") from None
        if d["status"] == "running" and _dead(d["summary"]):  # killed (e.g. kill -9) before it could say so
            d["status"], d["error"] = "failed", DIED.format(**d["summary"])
        return cls(**d)


DIED = "process {pid} on {host} ended without finishing the run (killed?)"


def _owner() -> dict[str, Any]:
    """Who runs a run: recorded in a running run's summary, so a run whose process died is seen as failed."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _dead(summary: Any) -> bool:
    if not isinstance(summary, dict) or summary.get("host") != socket.gethostname() or not isinstance(summary.get("pid"), int):
        return False  # another machine's process: cannot tell
    try:
        os.kill(summary["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class Store:
    """`Store(results_dir)` opens (creating if needed) `results_dir/ffnlab.db`; `readonly=True` opens an
    existing one without writing anything (a results directory may be read-only)."""

    def __init__(self, root: str | Path | None = None, timeout: float = 60.0, readonly: bool = False):
        self.root = results_dir(root)
        self.path = self.root / "ffnlab.db"
        self.timeout, self.readonly = timeout, readonly
        if readonly:
            if not self.path.is_file():
                raise FFNLabError(f"no run store in {str(self.root)!r} yet (ffnlab.db); train or run an experiment "
                                  "first, or point --results at another directory")
        else:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise FFNLabError(f"cannot create the results directory {str(self.root)!r}: {err.strerror}") from None
        with self._connect() as conn:
            self._check_schema(conn)
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        for table, columns in COLUMNS.items():
            found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not (columns <= found or not found and not self.readonly):  # a new store creates its tables
                raise FFNLabError(f"{str(self.path)!r} is not an ffnlab run store (its {table!r} table "
                                  f"{'lacks ' + ', '.join(sorted(columns - found)) if found else 'is missing'}); "
                                  "move it aside or point --results at another directory")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._open()
        except (sqlite3.Error, UnicodeDecodeError) as err:  # UnicodeDecodeError: damaged text in the schema
            raise FFNLabError(f"cannot open the run store {str(self.path)!r}: {err}") from None
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            yield conn
        except (sqlite3.DatabaseError, UnicodeDecodeError) as err:  # not a database, truncated, damaged text,
            # locked past the timeout, read-only
            raise FFNLabError(f"the run store {str(self.path)!r} cannot be used: {err}") from None
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        uri = self.path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.DatabaseError:  # WAL needs its -shm file, which a read-only directory cannot hold
            conn.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=self.timeout, isolation_level=None)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no lock upgrade deadlocks
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- writing -------------------------------------------------------------------------------
    def start_run(self, kind: str, config: Mapping[str, Any], name: str = "", seed: int | None = None,
                  hash: str | None = None) -> int:
        """Record a new run as running; returns its id. `hash` defaults to `config_hash(config)`."""
        with self._write() as conn:
            for row in conn.execute("SELECT * FROM runs WHERE status='running'").fetchall():
                dead = Run.from_row(row)
                if dead.status == "failed":  # record what readers already see
                    conn.execute("UPDATE runs SET status='failed', error=? WHERE id=?", (dead.error, dead.id))
            cur = conn.execute(
                "INSERT INTO runs (kind, name, config, config_hash, code_version, seed, status, started, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (kind, name, json.dumps(config, sort_keys=True, default=str), hash or config_hash(config),
                 code_version(), seed, time.time(), json.dumps(_owner())))
            return int(cur.lastrowid)

    def restart_run(self, run_id: int, from_step: int | None = None) -> None:
        """Mark a run running again (a resumed training run keeps its id and metrics). Metrics after
        `from_step` (logged before a crash, for steps the resumed run replays) are dropped."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET status='running', finished=NULL, error='', summary=? WHERE id=?",
                         (json.dumps(_owner()), run_id))
            if from_step is not None:
                conn.execute("DELETE FROM metrics WHERE run_id=? AND step>?", (run_id, int(from_step)))

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float]) -> None:
        with self._write() as conn:
            conn.executemany("INSERT INTO metrics (run_id, key, step, value) VALUES (?, ?, ?, ?)",
                             [(run_id, k, int(step), float(v)) for k, v in metrics.items()])

    def finish_run(self, run_id: int, summary: Mapping[str, Any] | None = None,
                   wall_seconds: float | None = None) -> None:
        """`wall_seconds`: the time the run's processes were alive, if the caller kept it (a resumed
        run); default: from start to now."""
        self._end(run_id, "finished", summary, "", wall_seconds)

    def fail_run(self, run_id: int, error: str, summary: Mapping[str, Any] | None = None) -> None:
        self._end(run_id, "failed", summary, error)

    def _end(self, run_id: int, status: str, summary: Mapping[str, Any] | None, error: str,
             wall_seconds: float | None = None) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute("UPDATE runs SET status=?, finished=?, wall_seconds=COALESCE(?, ?-started), summary=?, "
                         "error=? WHERE id=?", (status, now, wall_seconds, now,
                                                json.dumps(dict(summary or {}), default=str), error, run_id))

    def add_artifact(self, run_id: int, name: str, path: str | Path) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, path) VALUES (?, ?, ?)",
                         (run_id, name, str(Path(path).resolve())))

    # -- reading -------------------------------------------------------------------------------
    def run(self, run_id: int) -> Run:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise FFNLabError(f"no run with id {run_id} in {str(self.path)!r}")
        return Run.from_row(row)

    def runs(self, kind: str | None = None, name: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[Run]:
        """Runs, newest first, filtered by kind, name (SQL LIKE pattern) and status."""
        if status is not None and status not in STATUSES:
            raise FFNLabError(f"unknown run status {status!r}; known: {', '.join(STATUSES)}")
        where, args = [], []
        for column, value, op in (("kind", kind, "="), ("name", name, "LIKE"), ("status", status, "=")):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as conn:
            return [Run.from_row(r) for r in conn.execute(sql, args)]

    def find_finished(self, kind: str, hash: str) -> Run | None:
        """The newest finished run of `kind` with this config hash, if any."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE kind=? AND config_hash=? AND status='finished' "
                               "ORDER BY id DESC LIMIT 1", (kind, hash)).fetchone()
        return Run.from_row(row) if row else None

    def metrics(self, run_id: int, key: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """Metric series of a run: key -> [(step, value), ...] in step order."""
        sql, args = "SELECT key, step, value FROM metrics WHERE run_id=?", [run_id]
        if key is not None:
            sql, args = sql + " AND key=?", args + [key]
        out: dict[str, list[tuple[int, float]]] = {}
        with self._connect() as conn:
            for k, step, value in conn.execute(sql + " ORDER BY key, step, rowid", args):
                out.setdefault(k, []).append((step, value))
        return out

    def artifacts(self, run_id: int) -> dict[str, Path]:
        with self._connect() as conn:
            rows = conn.execute("SELECT name, path FROM artifacts WHERE run_id=?", (run_id,)).fetchall()
        return {name: Path(path) for name, path in rows}
