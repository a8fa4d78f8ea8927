"""A job's run state: one record per scene (what was done, with which input, model and settings),
and the state of the combined layer, in an SQLite database in the job's folder.

``<job dir>/state.sqlite`` has two tables: ``meta`` (format, version, job name, the combined
layer's state) and ``scenes``, one row per scene: its key, the columns runs filter on (status,
finished) and the whole record as JSON, since records are free-form and grow new keys. Recording
a change to one scene is one upsert of one row, so it costs the same with 10 or 100,000 scenes in
the archive (the ``manifest.json`` of earlier versions was rewritten whole on every change).

While a run has it open the database is in WAL mode with ``synchronous=FULL``: every committed
update is on disk when :meth:`RunState.put` returns, and neither a kill nor a power cut loses or
half-writes one. A clean close switches it back to a rollback journal, which leaves one
self-contained file at rest that a read-only open (``geoseg run --dry-run``) reads without
creating any side file.

A job folder with a ``manifest.json`` (``geoseg-manifest/1``) and no database is migrated by the
first writable open, in the transaction that creates the database; the JSON file is then renamed
``manifest.json.migrated``, so it is read once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

from geoseg.errors import GeosegError
from geoseg.faults import fault_point
from geoseg.io.atomic import fsync_dir

STATE_FILE = "state.sqlite"
STATE_FORMAT = "geoseg-runstate"
#: the schema version this code writes; a database of a newer one is refused, not guessed at
STATE_VERSION = 1
#: the JSON manifest of earlier versions, migrated on the first writable open
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "geoseg-manifest/1"
#: how long to wait for another connection's lock (a dry run reading while a run writes)
BUSY_TIMEOUT_MS = 30_000

_T = TypeVar("_T")

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE scenes (key TEXT PRIMARY KEY, status TEXT, finished TEXT, record TEXT NOT NULL)",
    "CREATE INDEX scenes_status ON scenes (status)",
)
_PUT_SCENE = (
    "INSERT INTO scenes (key, status, finished, record) VALUES (?, ?, ?, ?) ON CONFLICT (key) "
    "DO UPDATE SET status = excluded.status, finished = excluded.finished, record = excluded.record"
)
_PUT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class RunState:
    """The run state of one job. Open it with :meth:`open`; use it as a context manager.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunState.open(d, "demo") as state:
    ...     state.put("scene-b", {"status": "failed", "error": "cannot read window"})
    ...     state.put("scene-a", {"status": "done", "finished": "2026-11-01T00:00:00Z", "objects": 3})
    >>> with RunState.open(d, "demo", readonly=True) as state:
    ...     len(state), [k for k, _ in state.records()], [k for k, _ in state.records("done")]
    (2, ['scene-a', 'scene-b'], ['scene-a'])
    """

    def __init__(self, db: sqlite3.Connection, path: str, *, readonly: bool) -> None:
        self._db: sqlite3.Connection | None = db
        self.path = path  # what errors name: the database, or the JSON manifest a read-only state holds
        self.readonly = readonly

    # -- opening and closing ------------------------------------------------------------------
    @classmethod
    def open(cls, job_dir: str, job_name: str, *, readonly: bool = False) -> RunState:
        """The run state in ``job_dir``, created (and a ``manifest.json`` there migrated) unless
        ``readonly``. A read-only open creates nothing: without a database it holds the JSON
        manifest's records, or none, in memory."""
        path = os.path.join(job_dir, STATE_FILE)
        manifest = os.path.join(job_dir, MANIFEST_FILE)
        if readonly:
            return cls._open_readonly(path, manifest, job_name)
        # read before anything is created, so that a manifest which is refused leaves nothing behind
        doc = None if os.path.exists(path) else _read_manifest(manifest)
        os.makedirs(job_dir, exist_ok=True)
        db = _connect(path, readonly=False)
        try:
            _guarded(path, _schema_version, db, path)  # refuse a foreign or newer database unchanged
            _guarded(path, _use_wal, db, path)
            _guarded(path, _initialise, db, path, job_name, manifest, doc)
        except BaseException:
            db.close()
            raise
        return cls(db, path, readonly=False)

    @classmethod
    def _open_readonly(cls, path: str, manifest: str, job_name: str) -> RunState:
        if os.path.exists(path):
            db = _connect(path, readonly=True)
            try:
                if _guarded(path, _schema_version, db, path) is not None:
                    return cls(db, path, readonly=True)
            except BaseException:
                db.close()
                raise
            db.close()  # no tables yet: a first run was killed before its first commit
        doc = _read_manifest(manifest)
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.execute("BEGIN")
        _create(db, job_name, doc, migrated=False)
        db.execute("COMMIT")
        db.execute("PRAGMA query_only = ON")  # writes fail as they do on a read-only file
        return cls(db, path if doc is None else manifest, readonly=True)

    def close(self) -> None:
        """Close the database (again: a no-op)."""
        if self._db is None:
            return
        db, self._db = self._db, None
        if not self.readonly:
            # Back to a rollback journal: one self-contained file at rest, which read-only opens
            # read without creating -wal and -shm files. Refused at once while another connection
            # (a dry run) has it open; the WAL files then stay, which is just as safe.
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA busy_timeout = 0")
                db.execute("PRAGMA journal_mode = DELETE")
        db.close()

    def __enter__(self) -> RunState:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        """The record of scene ``key``, or None if it has none."""
        rows = self._read("SELECT record FROM scenes WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def records(self, status: str | None = None) -> list[tuple[str, dict]]:
        """``(key, record)`` of every scene, or of those with ``status``, sorted by key."""
        if status is None:
            rows = self._read("SELECT key, record FROM scenes ORDER BY key")
        else:
            rows = self._read("SELECT key, record FROM scenes WHERE status = ? ORDER BY key", (status,))
        return [(key, json.loads(record)) for key, record in rows]

    @property
    def combined(self) -> dict:
        """The combined layer's state as last recorded (``{}`` before it was first written)."""
        rows = self._read("SELECT value FROM meta WHERE key = 'combined'")
        return json.loads(rows[0][0]) if rows else {}

    def __len__(self) -> int:
        return self._read("SELECT count(*) FROM scenes")[0][0]

    # -- writing ------------------------------------------------------------------------------
    def put(self, key: str, record: dict) -> None:
        """Record (insert or replace) the record of scene ``key``: one statement, one transaction,
        on disk when this returns."""
        self._write(_PUT_SCENE, _scene_row(key, record))
        fault_point("manifest-written")

    def set_combined(self, state: dict) -> None:
        """Record the combined layer's state, as :meth:`put` records a scene's."""
        self._write(_PUT_META, ("combined", json.dumps(state, sort_keys=True)))
        fault_point("manifest-written")

    # -- internals ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise GeosegError(f"state '{self.path}': already closed")
        return self._db

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        db = self._connection()
        return _guarded(self.path, lambda: db.execute(sql, params).fetchall())

    def _write(self, sql: str, params: tuple) -> None:
        db = self._connection()
        try:
            db.execute(sql, params)  # autocommit: the statement is its own transaction
        except sqlite3.Error as exc:
            raise GeosegError(f"state '{self.path}': cannot record the update ({exc})") from None


def results_digest(done: list[tuple[str, dict]], extra=None) -> str:
    """What identifies the done scenes' results (key, input, model, settings, finish time), for
    outputs made from all of them (the combined layer, the STAC Collection) to be rebuilt only
    when one changed; ``extra`` adds what else such an output depends on."""
    rows = [(k, r["fingerprint"], r["model_hash"], r["params_hash"], r["finished"]) for k, r in done]
    payload = rows if extra is None else [rows, extra]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:16]


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), waiting out other locks."""
    try:
        if readonly:
            uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise GeosegError(f"state '{path}': cannot open ({exc})") from None
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return db


def _use_wal(db: sqlite3.Connection, path: str) -> None:
    """WAL, so that readers never block the run, and a sync at every commit (WAL's usual
    ``synchronous=NORMAL`` may lose the last commits in a power cut)."""
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise GeosegError(f"state '{path}': the file system refuses SQLite's WAL mode (got {mode})")
    db.execute("PRAGMA synchronous = FULL")


def _guarded(path: str, fn: Callable[..., _T], *args) -> _T:
    """``fn(*args)``, with SQLite's errors as one-line errors naming the database."""
    try:
        return fn(*args)
    except sqlite3.OperationalError as exc:  # locked, no access, I/O error: the file may well be fine
        raise GeosegError(f"state '{path}': {exc}") from None
    except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
        raise GeosegError(
            f"state '{path}': not a geoseg run state ({exc}); move it aside to start afresh"
        ) from None


def _schema_version(db: sqlite3.Connection, path: str) -> int | None:
    """The version of a geoseg run state; None for a database without tables (new, or left by a
    first run killed before its first commit)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if not {"meta", "scenes"} <= tables:
        raise GeosegError(
            f"state '{path}': not a geoseg run state (no meta and scenes tables); "
            "move it aside to start afresh"
        )
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('format', 'version')"))
    if meta.get("format") != STATE_FORMAT or not str(meta.get("version", "")).isdigit():
        raise GeosegError(
            f"state '{path}': not a geoseg run state (format {meta.get('format')!r}, version "
            f"{meta.get('version')!r}); move it aside to start afresh"
        )
    version = int(meta["version"])
    if version > STATE_VERSION:
        raise GeosegError(
            f"state '{path}': format version {version} is newer than this geoseg reads ({STATE_VERSION}); "
            "run it with a newer geoseg"
        )
    return version


def _initialise(db: sqlite3.Connection, path: str, job_name: str, manifest: str, doc: dict | None) -> None:
    """Create the tables unless they exist, importing the JSON ``manifest`` (``doc`` if it was read
    already) in the same transaction, so a kill leaves either no tables (and the next open imports
    again) or every record; then retire the JSON file."""
    db.execute("BEGIN IMMEDIATE")
    try:
        created = _schema_version(db, path) is None
        if created:
            _create(db, job_name, doc if doc is not None else _read_manifest(manifest), migrated=True)
        migrated = db.execute("SELECT 1 FROM meta WHERE key = 'migrated_from'").fetchone() is not None
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if created:
        fsync_dir(os.path.dirname(path) or ".")  # the new database's own name survives a power cut too
    # Renamed once its records are committed; a run killed in between renames it next time. A
    # manifest.json that appears beside a database not made from it is left alone (and unused).
    if migrated and os.path.exists(manifest):
        os.replace(manifest, manifest + ".migrated")
        fsync_dir(os.path.dirname(manifest) or ".")


def _create(db: sqlite3.Connection, job_name: str, manifest: dict | None, *, migrated: bool) -> None:
    """The tables and their first rows, inside the caller's transaction."""
    for statement in _SCHEMA:
        db.execute(statement)
    meta = [("format", STATE_FORMAT), ("version", str(STATE_VERSION)), ("job", job_name)]
    if manifest is not None:
        if manifest["combined"]:
            meta.append(("combined", json.dumps(manifest["combined"], sort_keys=True)))
        if migrated:
            meta.append(("migrated_from", MANIFEST_FILE))
        db.executemany(_PUT_SCENE, (_scene_row(k, r) for k, r in manifest["scenes"].items()))
    db.executemany(_PUT_META, meta)


def _scene_row(key: str, record: dict) -> tuple:
    return key, record.get("status"), record.get("finished"), json.dumps(record, sort_keys=True)


def _read_manifest(path: str) -> dict | None:
    """The scenes and combined state of a ``geoseg-manifest/1`` file, or None if there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GeosegError(f"manifest '{path}': unreadable ({exc}); move it aside to start afresh") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise GeosegError(f"manifest '{path}': not a {MANIFEST_FORMAT} file (format {found!r})")
    scenes, combined = doc.get("scenes", {}), doc.get("combined", {})
    if not (isinstance(scenes, dict) and all(isinstance(r, dict) for r in scenes.values())):
        raise GeosegError(f"manifest '{path}': 'scenes' is not a mapping of scene records")
    if not isinstance(combined, dict):
        raise GeosegError(f"manifest '{path}': 'combined' is not a mapping")
    return {"scenes": scenes, "combined": combined}
