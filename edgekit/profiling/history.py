"""Every profile run in a SQLite file in the user's cache folder, to compare a run with the last comparable one.

Location: $EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit (macOS: ~/Library/Caches/edgekit).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from edgekit.paths import cache_dir
from edgekit.profiling.report import ProfileReport

DB_NAME = "profile-history.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    bundle_name TEXT,
    device_uri TEXT NOT NULL,
    settings_key TEXT NOT NULL,
    complete INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_lookup ON runs (bundle_sha256, device_uri, settings_key, id);
"""


def settings_key(settings: dict[str, Any]) -> str:
    s = {k: v for k, v in settings.items() if k != "timeout_s"}
    return json.dumps(s, sort_keys=True)


class History:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, report: ProfileReport) -> int:
        d = report.data
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (created, bundle_sha256, bundle_name, device_uri, settings_key, complete, report) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (d["created"], d["bundle"]["manifest_sha256"], d["bundle"].get("name"), d["device"]["uri"],
                 settings_key(d["settings"]), int(report.complete), json.dumps(d)))
            return int(cur.lastrowid)

    def last(self, report: ProfileReport, before_id: int | None = None) -> tuple[int, ProfileReport] | None:
        """The latest complete run of the same bundle hash, device and settings (older than `before_id`)."""
        d = report.data
        query = ("SELECT id, report FROM runs WHERE bundle_sha256 = ? AND device_uri = ? AND settings_key = ? "
                 "AND complete = 1")
        args: list[Any] = [d["bundle"]["manifest_sha256"], d["device"]["uri"], settings_key(d["settings"])]
        if before_id is not None:
            query += " AND id < ?"
            args.append(before_id)
        with self._connect() as db:
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return (int(row[0]), ProfileReport(json.loads(row[1]))) if row else None

    def device_figures(self, device_uri: str) -> dict[str, Any] | None:
        """What the latest run on `device_uri` that measured the read bandwidth recorded: read_bandwidth_gbs, the
        run's id and bundle (for `edgekit plan`)."""
        with self._connect() as db:
            rows = db.execute("SELECT id, report FROM runs WHERE device_uri = ? ORDER BY id DESC LIMIT 20",
                              (device_uri,)).fetchall()
        for run_id, text in rows:
            doc = json.loads(text)
            gbs = (doc.get("results") or {}).get("read_bandwidth_gbs")
            if gbs:
                return {"read_bandwidth_gbs": float(gbs), "history_id": int(run_id),
                        "bundle": (doc.get("bundle") or {}).get("name"), "created": doc.get("created")}
        return None

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT id, created, bundle_name, bundle_sha256, device_uri, complete FROM runs "
                              "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        keys = ("id", "created", "bundle_name", "bundle_sha256", "device_uri", "complete")
        return [dict(zip(keys, r)) for r in rows]
