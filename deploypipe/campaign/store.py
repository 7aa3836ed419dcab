"""The results store: one SQLite file (Python's sqlite3) that every campaign appends to.

Tables (docs/campaign.md has the full schema): `runs` (one per `deploypipe campaign` invocation:
file digest, executor, host, ISA, run context), `cells` (one row per cell and run: the variant, its
status — measured, estimated, unmeasured, refused, excluded, failed, or built while the run is under way — the
reason, the artifact and its build key, fidelity figures from the build, and the full bench result),
and `figures`, measured and estimated kept in separate rows whose `kind` says which and whose
`label` says "measured on ..." or "estimated by ...". A cell finished in an earlier run of the same
campaign is what makes a campaign resumable.

`schema_version` holds the store's version; opening a store migrates it forward in one transaction,
and refuses a store written by a newer deploypipe (its version is unknown here).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from deploypipe.errors import InputFileError

FINISHED = ("measured", "estimated", "unmeasured", "refused", "excluded", "failed")
SCHEMA_VERSION = 1
# version -> statements that take a store from the previous version to it
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY, campaign TEXT NOT NULL, file TEXT, spec_digest TEXT NOT NULL,
            started REAL NOT NULL, finished REAL, executor TEXT NOT NULL, host TEXT, isa TEXT, context TEXT)""",
        """CREATE TABLE cells (
            id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), campaign TEXT NOT NULL,
            cell_key TEXT NOT NULL, model TEXT NOT NULL, target TEXT NOT NULL, variant TEXT NOT NULL,
            compiler TEXT NOT NULL, precision TEXT NOT NULL, prune REAL, recipe TEXT, threads INTEGER,
            batch INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', artifact TEXT,
            build_key TEXT, cached INTEGER, build_s REAL, size_mb REAL, cosine REAL, max_abs_err REAL,
            top1_agreement REAL, accuracy REAL, accuracy_fp32 REAL, fidelity_where TEXT, bench_json TEXT,
            updated REAL NOT NULL, UNIQUE (run_id, cell_key))""",
        "CREATE INDEX cells_by_campaign ON cells (campaign, cell_key, status)",
        """CREATE TABLE figures (
            cell_id INTEGER NOT NULL REFERENCES cells(id), kind TEXT NOT NULL CHECK (kind IN ('measured', 'estimated')),
            latency_p50_ms REAL, latency_p90_ms REAL, samples_per_s REAL, energy_mj REAL, energy_source TEXT,
            label TEXT NOT NULL, PRIMARY KEY (cell_id, kind))""",
    ],
}
_CELL_COLUMNS = ("model", "target", "variant", "compiler", "precision", "prune", "recipe", "threads", "batch",
                 "status", "reason", "artifact", "build_key", "cached", "build_s", "size_mb", "cosine", "max_abs_err",
                 "top1_agreement", "accuracy", "accuracy_fp32", "fidelity_where", "bench_json")


class Store:
    """An open results store (a context manager); every write is committed at once, so a run
    killed half-way keeps every cell it finished."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise InputFileError(f"results store {self.path}: not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise InputFileError(f"results store {self.path}: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self._tx():
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.version
            if current > SCHEMA_VERSION:
                raise InputFileError(f"results store {self.path} has schema version {current}, newer than this "
                                     f"deploypipe's {SCHEMA_VERSION}: upgrade deploypipe to read it")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    self.db.execute(statement)
            if current == 0:
                self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current < SCHEMA_VERSION:
                self.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self.db:  # commits, or rolls back on an exception
            yield

    def start_run(self, campaign: str, file: str, digest: str, executor: str, host: str, isa: str,
                  context: dict[str, Any]) -> int:
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO runs (campaign, file, spec_digest, started, executor, host, isa, context) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (campaign, file, digest, time.time(), executor, host, isa, json.dumps(context, default=str)))
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run_id))

    def finished(self, campaign: str) -> dict[str, sqlite3.Row]:
        """cell key -> its latest finished row, over every earlier run of the campaign."""
        rows = self.db.execute(
            f"SELECT * FROM cells WHERE campaign = ? AND status IN ({','.join('?' * len(FINISHED))}) ORDER BY id",
            (campaign, *FINISHED)).fetchall()
        return {r["cell_key"]: r for r in rows}

    def put_cell(self, run_id: int, campaign: str, key: str, fields: dict[str, Any],
                 figures: list[dict[str, Any]] | None = None) -> None:
        """Insert or update the run's row of a cell (and replace its figures when given)."""
        unknown = set(fields) - set(_CELL_COLUMNS)
        assert not unknown, unknown
        with self._tx():
            row = self.db.execute("SELECT id FROM cells WHERE run_id = ? AND cell_key = ?", (run_id, key)).fetchone()
            if row is None:
                cols = ["run_id", "campaign", "cell_key", "updated", *fields]
                self.db.execute(f"INSERT INTO cells ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                (run_id, campaign, key, time.time(), *fields.values()))
                cell_id = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
            else:
                cell_id = row[0]
                sets = ", ".join(f"{c} = ?" for c in (*fields, "updated"))
                self.db.execute(f"UPDATE cells SET {sets} WHERE id = ?", (*fields.values(), time.time(), cell_id))
            if figures is not None:
                self.db.execute("DELETE FROM figures WHERE cell_id = ?", (cell_id,))
                for f in figures:
                    cols = ["cell_id", *f]
                    self.db.execute(f"INSERT INTO figures ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                    (cell_id, *f.values()))

    def query(self, model: str | None = None, target: str | None = None, campaign: str | None = None) -> list[dict[str, Any]]:
        """The latest row of every (campaign, cell) that matches, with its measured and estimated
        figures as separate, labelled columns."""
        done = ", ".join(f"'{s}'" for s in FINISHED)  # the latest finished row, else the latest one
        where: list[str] = [(f"c.id IN (SELECT COALESCE(MAX(CASE WHEN status IN ({done}) THEN id END), MAX(id)) "
                             "FROM cells GROUP BY campaign, cell_key)")]
        args: list[Any] = []
        for col, value in (("model", model), ("target", target), ("campaign", campaign)):
            if value is not None:
                where.append(f"c.{col} = ?")
                args.append(value)
        rows = self.db.execute(
            "SELECT c.*, r.host, r.isa, r.executor, "
            "m.latency_p50_ms AS measured_p50_ms, m.latency_p90_ms AS measured_p90_ms, "
            "m.samples_per_s AS measured_samples_per_s, m.energy_mj AS measured_energy_mj, "
            "m.energy_source AS measured_energy_source, m.label AS measured_label, "
            "e.latency_p50_ms AS estimated_ms, e.samples_per_s AS estimated_samples_per_s, "
            "e.energy_mj AS estimated_energy_mj, e.energy_source AS estimated_energy_source, e.label AS estimate_label "
            "FROM cells c JOIN runs r ON r.id = c.run_id "
            "LEFT JOIN figures m ON m.cell_id = c.id AND m.kind = 'measured' "
            "LEFT JOIN figures e ON e.cell_id = c.id AND e.kind = 'estimated' "
            f"WHERE {' AND '.join(where)} ORDER BY c.campaign, c.id", args).fetchall()
        return [dict(r) for r in rows]

    def campaigns(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT campaign FROM runs ORDER BY id")]

    def runs(self, campaign: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs WHERE campaign = ? ORDER BY id", (campaign,))]
