"""The run state of ``geoseg run`` (SQLite, one row per scene): round trips, durability settings,
migration of the JSON manifest of earlier versions, read-only opens, errors, and that one update's
work does not grow with the number of scenes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import geoseg.batch.runstate
from geoseg.batch.runstate import MANIFEST_FORMAT, STATE_VERSION, RunState
from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from tests.helpers import objects_array, write_raster


def done_record(i: int = 0, **extra) -> dict:
    """A record as the runner writes it for a finished scene."""
    return {
        "href": f"/archive/scene-{i}.tif",
        "source": "glob",
        "item_id": None,
        "fingerprint": f"{i:016x}",
        "model_hash": "m" * 16,
        "params_hash": "p" * 16,
        "status": "done",
        "started": "2026-11-01T00:00:00Z",
        "finished": "2026-11-01T00:01:00Z",
        "outputs": [f"scene-{i}.geojson"],
        "objects": i,
        "tiles": 9,
        "tiles_run": 9,
        "seconds": 60.0,
        "error": None,
        "attempts": 1,
        **extra,
    }


FAILED = {**done_record(2), "status": "failed", "error": "cannot read window", "outputs": [], "attempts": 2}
COMBINED = {"state": "0123456789abcdef", "path": "archive.gpkg", "written": "2026-11-01T00:02:00Z"}


def write_manifest(job_dir: Path, scenes: dict, combined: dict | None = None) -> Path:
    """A manifest.json as geoseg wrote it before the run state was a database."""
    job_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": MANIFEST_FORMAT, "job": job_dir.name, "scenes": scenes, "combined": combined or {}}
    path = job_dir / "manifest.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return path


def test_round_trip(tmp_path):
    with RunState.open(str(tmp_path / "job"), "job") as state:
        assert len(state) == 0 and state.records() == [] and state.combined == {}
        assert state.get("scene-1") is None
        state.put("scene-2", FAILED)
        state.put("scene-1", {**done_record(1), "status": "running"})
        state.put("scene-1", done_record(1, extra_key=[1, {"x": None}]))  # an upsert; new keys kept
        state.set_combined(COMBINED)
        assert len(state) == 2
        assert state.get("scene-1") == done_record(1, extra_key=[1, {"x": None}])
        assert state.records() == [("scene-1", state.get("scene-1")), ("scene-2", FAILED)]
        assert state.records("done") == [("scene-1", state.get("scene-1"))]
        assert state.records("failed") == [("scene-2", FAILED)]
        assert state.records("running") == []
        assert state.combined == COMBINED


def test_a_reopened_state_sees_the_updates_and_is_one_file_at_rest(tmp_path):
    job_dir = tmp_path / "job"
    with RunState.open(str(job_dir), "job") as state:
        state.put("scene-1", done_record(1))
    with RunState.open(str(job_dir), "job") as state:
        assert state.get("scene-1") == done_record(1)
        state.put("scene-2", FAILED)
        state.set_combined(COMBINED)
    assert sorted(os.listdir(job_dir)) == ["state.sqlite"]  # WAL checkpointed and gone after a close
    with RunState.open(str(job_dir), "job", readonly=True) as state:
        assert dict(state.records()) == {"scene-1": done_record(1), "scene-2": FAILED}
        assert state.combined == COMBINED
        with pytest.raises(GeosegError, match="state '.*state.sqlite': cannot record"):
            state.put("scene-3", done_record(3))
    assert sorted(os.listdir(job_dir)) == ["state.sqlite"]  # a read-only open left no side file


def test_wal_and_synchronous_full(tmp_path):
    with RunState.open(str(tmp_path), "job") as state:
        db = state._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert dict(db.execute("SELECT key, value FROM meta WHERE key != 'combined'")) == {
            "format": "geoseg-runstate", "version": str(STATE_VERSION), "job": "job"
        }  # fmt: skip


def test_put_and_set_combined_reach_the_fault_point_once_each(tmp_path, monkeypatch):
    hits = []
    monkeypatch.setattr(geoseg.batch.runstate, "fault_point", hits.append)
    with RunState.open(str(tmp_path), "job") as state:
        assert hits == []  # opening is not an update
        state.put("scene-1", done_record(1))
        state.put("scene-1", done_record(1))
        state.set_combined(COMBINED)
    assert hits == ["manifest-written"] * 3


KILLED = """
import sys
from geoseg.batch.runstate import RunState
state = RunState.open(sys.argv[1], "job")
state.put("scene-1", {"status": "done", "finished": "2026-11-01T00:01:00Z"})
state.put("scene-2", {"status": "running"})  # GEOSEG_CRASH_AT kills the process right after this commit
state.put("scene-3", {"status": "running"})
"""


def test_a_killed_writer_keeps_every_committed_update(tmp_path):
    env = {**os.environ, "GEOSEG_CRASH_AT": "manifest-written:2"}
    r = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (tmp_path / "state.sqlite-wal").exists()  # not closed: the updates are in the WAL
    with RunState.open(str(tmp_path), "job", readonly=True) as state:  # as --dry-run reads it
        assert [(k, r["status"]) for k, r in state.records()] == [("scene-1", "done"), ("scene-2", "running")]
    with RunState.open(str(tmp_path), "job") as state:
        assert [k for k, _ in state.records("running")] == ["scene-2"]
    assert sorted(os.listdir(tmp_path)) == ["state.sqlite"]


def test_migrates_a_json_manifest_once(tmp_path):
    job_dir = tmp_path / "archive"
    manifest = write_manifest(job_dir, {"scene-a": done_record(1), "scene-c": FAILED}, COMBINED)
    text = manifest.read_text()
    with RunState.open(str(job_dir), "archive") as state:
        assert state.records() == [("scene-a", done_record(1)), ("scene-c", FAILED)]
        assert state.records("done") == [("scene-a", done_record(1))]
        assert state.combined == COMBINED
        state.put("scene-c", done_record(2))  # the retry succeeded
    assert not manifest.exists()
    assert (job_dir / "manifest.json.migrated").read_text() == text
    with RunState.open(str(job_dir), "archive") as state:  # not migrated again
        assert dict(state.records()) == {"scene-a": done_record(1), "scene-c": done_record(2)}

    # killed after the import's commit but before the rename: the next open only renames it
    manifest.write_text(text)
    with RunState.open(str(job_dir), "archive") as state:
        assert dict(state.records()) == {"scene-a": done_record(1), "scene-c": done_record(2)}
    assert not manifest.exists() and (job_dir / "manifest.json.migrated").exists()


def test_a_manifest_beside_a_database_not_made_from_it_is_left_alone(tmp_path):
    with RunState.open(str(tmp_path), "job") as state:
        state.put("scene-1", done_record(1))
    manifest = write_manifest(tmp_path, {"scene-9": done_record(9)})
    with RunState.open(str(tmp_path), "job") as state:
        assert [k for k, _ in state.records()] == ["scene-1"]
    assert manifest.exists()


def test_migration_after_a_first_open_killed_before_its_commit(tmp_path):
    write_manifest(tmp_path, {"scene-a": done_record(1)})
    (tmp_path / "state.sqlite").write_bytes(b"")  # the database file exists, without tables
    with RunState.open(str(tmp_path), "job", readonly=True) as state:
        assert state.records() == [("scene-a", done_record(1))]
    with RunState.open(str(tmp_path), "job") as state:
        assert state.records() == [("scene-a", done_record(1))]
    assert (tmp_path / "manifest.json.migrated").exists()


def test_readonly_open_creates_nothing(tmp_path):
    job_dir = tmp_path / "archive"
    write_manifest(job_dir, {"scene-a": done_record(1), "scene-c": FAILED}, COMBINED)
    with RunState.open(str(job_dir), "archive", readonly=True) as state:
        assert state.records() == [("scene-a", done_record(1)), ("scene-c", FAILED)]
        assert state.combined == COMBINED and len(state) == 2
        with pytest.raises(GeosegError, match="manifest.json': cannot record"):
            state.put("scene-b", done_record(3))
    assert sorted(os.listdir(job_dir)) == ["manifest.json"]  # neither migrated nor renamed

    with RunState.open(str(tmp_path / "nothing"), "nothing", readonly=True) as state:
        assert len(state) == 0 and state.records() == [] and state.combined == {}
    assert not (tmp_path / "nothing").exists()


def _sqlite(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()


ERRORS = {
    "not a database": (
        lambda d: (d / "state.sqlite").write_bytes(b"this is not SQLite\n" * 400),
        "state '{d}/state.sqlite': not a geoseg run state (file is not a database); "
        "move it aside to start afresh",
    ),
    "another database": (
        lambda d: _sqlite(d / "state.sqlite", "CREATE TABLE tiles (x)"),
        "state '{d}/state.sqlite': not a geoseg run state (no meta and scenes tables)",
    ),
    "a newer version": (
        lambda d: _sqlite(
            d / "state.sqlite",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE scenes (key TEXT PRIMARY KEY, record TEXT)",
            "INSERT INTO meta VALUES ('format', 'geoseg-runstate'), ('version', '99')",
        ),
        f"state '{{d}}/state.sqlite': format version 99 is newer than this geoseg reads ({STATE_VERSION})",
    ),
    "a manifest of another format": (
        lambda d: (d / "manifest.json").write_text('{"format": "geoseg-manifest/7", "scenes": {}}'),
        "manifest '{d}/manifest.json': not a geoseg-manifest/1 file (format 'geoseg-manifest/7')",
    ),
    "a truncated manifest": (
        lambda d: (d / "manifest.json").write_text('{"format": "geoseg-manifest/1", "scen'),
        "manifest '{d}/manifest.json': unreadable (",
    ),
}


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_the_file_in_one_line(tmp_path, case, readonly):
    make, message = ERRORS[case]
    make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(GeosegError) as err:
        RunState.open(str(tmp_path), "job", readonly=readonly)
    assert message.format(d=tmp_path) in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == before  # refused before anything was created or changed


def _seeded(job_dir: Path, n: int) -> RunState:
    write_manifest(job_dir, {f"scene-{i:06d}": done_record(i) for i in range(n)})  # imported in bulk
    state = RunState.open(str(job_dir), job_dir.name)
    assert len(state) == n
    return state


@pytest.mark.parametrize("n", [10, 5000])
def test_one_update_is_a_bounded_amount_of_work(tmp_path, n):
    """The work of one put() and one get() does not depend on how many scenes are recorded: one
    statement, one changed row, a primary-key search (never a scan). Both sizes run the same
    assertions, so a cost that grew with the rows would fail at 5,000."""
    with _seeded(tmp_path / f"job{n}", n) as state:
        db = state._db
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        changes = db.total_changes
        state.put("scene-000005", done_record(5, objects=42))  # an update of an existing row
        state.put("scene-new", done_record(7))  # and an insert
        db.set_trace_callback(None)
        assert len(statements) == 2 and all(s.startswith("INSERT INTO scenes") for s in statements)
        assert db.total_changes - changes == 2

        db.set_trace_callback(statements.append)
        assert state.get("scene-000005")["objects"] == 42
        db.set_trace_callback(None)
        plan = db.execute(f"EXPLAIN QUERY PLAN {statements[-1]}").fetchall()
        assert [row[3].split()[0] for row in plan] == ["SEARCH"], plan
        assert len(state) == n + 1


# -- end to end: a job folder of an earlier version ------------------------------------------------
JOB = """\
name: mig
inputs: [{glob: 'scenes/*.tif', bands: [1]}]
model: geoseg.models.plugins:threshold_instances
model_args: {threshold: 100}
tiling: {tile_size: 256, overlap: 32, batch_size: 2}
outputs: {dir: out, combined: gpkg}
store: tiles
"""


def test_a_job_folder_with_a_json_manifest_is_migrated_and_its_done_scenes_skipped(tmp_path):
    (tmp_path / "scenes").mkdir()
    for seed in (1, 2):
        write_raster(tmp_path / "scenes" / f"s{seed}.tif", objects_array(300, 300, seed=seed))
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    r = CliRunner().invoke(cli, ["run", str(job)])
    assert r.exit_code == 0, r.output
    out, job_dir = tmp_path / "out", tmp_path / "tiles" / "mig"

    # turn the job folder into one that the JSON-manifest version of geoseg left behind
    db = sqlite3.connect(job_dir / "state.sqlite")
    scenes = {k: json.loads(rec) for k, rec in db.execute("SELECT key, record FROM scenes")}
    combined = json.loads(db.execute("SELECT value FROM meta WHERE key = 'combined'").fetchone()[0])
    db.close()
    assert sorted(scenes) == ["s1", "s2"] and {r["status"] for r in scenes.values()} == {"done"}
    for p in job_dir.glob("state.sqlite*"):
        p.unlink()
    write_manifest(job_dir, scenes, combined)
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith("mig.report")}
    assert sorted(written) == ["mig.gpkg", "s1.geojson", "s2.geojson", "stac"]

    r = CliRunner().invoke(cli, ["run", str(job), "--dry-run"])  # reads the JSON, migrates nothing
    assert r.exit_code == 0, r.output
    assert [line.split()[:2] for line in r.output.splitlines()[:2]] == [["skip", "s1"], ["skip", "s2"]]
    assert not (job_dir / "state.sqlite").exists() and (job_dir / "manifest.json").exists()

    r = CliRunner().invoke(cli, ["run", str(job)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "mig.report.json").read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (0, 2, 0)
    assert {s["scene"]: s["result"] for s in report["scenes"]} == {"s1": "skipped", "s2": "skipped"}
    assert {n: (out / n).stat().st_mtime_ns for n in written} == written  # not even the combined layer
    assert not (job_dir / "manifest.json").exists() and (job_dir / "manifest.json.migrated").exists()
    with RunState.open(str(job_dir), "mig", readonly=True) as state:
        assert dict(state.records()) == scenes and state.combined == combined
