"""Cost of recording one scene's update in a job's run state, with 10, 10,000 and 100,000 scenes
recorded: the SQLite run state (``geoseg.batch.runstate.RunState``, one upserted row, WAL,
``synchronous=FULL``) against the JSON manifest of earlier versions, reimplemented here as it
worked (every record serialised and the whole file written to a temporary name, fsynced and
renamed, on every change).

Each update records a finished scene (a 'done' record as ``geoseg run`` writes it) over an
existing one; the figure is the median over the updates (SQLite's sizes take turns, so a drift
in the disk's sync latency hits them alike). The ratio 100,000 / 10 scenes is 1.0 for
a cost that does not grow with the archive. Work files go to bench/.work/ (a real disk: on a
tmpfs fsync costs nothing).

    .venv/bin/python bench/manifest_update.py [--sizes 10,10000,100000] [--updates 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402
from geoseg.batch.runstate import MANIFEST_FORMAT, RunState  # noqa: E402

WORK = Path(__file__).resolve().parents[1] / "bench" / ".work" / "manifest_update"


def record(i: int, status: str = "done") -> dict:
    """A scene's record as the runner writes it."""
    return {
        "href": f"/archive/2026/11/scene-{i:06d}.tif",
        "source": "stac",
        "item_id": f"scene-{i:06d}",
        "fingerprint": f"{i * 2654435761 % 2**64:016x}",
        "model_hash": "3f2a9c0d1b7e4a65",
        "params_hash": "9b1d4e7a2c3f8065",
        "status": status,
        "started": "2026-11-01T02:00:00Z",
        "finished": "2026-11-01T02:03:12Z",
        "outputs": [f"scene-{i:06d}.geojson"],
        "objects": i % 97,
        "tiles": 256,
        "tiles_run": 256,
        "seconds": 192.417,
        "error": None,
        "attempts": 1,
    }


def json_manifest(path: Path, n: int) -> dict:
    scenes = {f"scene-{i:06d}": record(i) for i in range(n)}
    doc = {"format": MANIFEST_FORMAT, "job": "bench", "scenes": scenes, "combined": {}}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return doc


def old_save(path: Path, doc: dict) -> None:
    """What Manifest.save() did: the whole document, to a temporary file, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def timed(fn, updates: int, budget_s: float) -> list[float]:
    """Milliseconds of ``fn(k)`` for k = 0, 1, ...: ``updates`` calls, fewer (at least 3) when they
    run past ``budget_s``."""
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    for k in range(updates):
        t0 = time.perf_counter()
        fn(k)
        times.append((time.perf_counter() - t0) * 1e3)
        if k >= 2 and time.perf_counter() > t_end:
            break
    return times


def sqlite_updates(states: dict[int, RunState], keys: dict[int, list[str]], updates: int) -> dict[int, list]:
    """Per-update milliseconds of RunState.put at each size, the sizes taking turns, so that a
    change in the disk's sync latency during the run (a shared machine) hits them alike."""
    times: dict[int, list[float]] = {n: [] for n in states}
    for k in range(updates):
        for n, state in states.items():
            t0 = time.perf_counter()
            state.put(keys[n][k], record(k))
            times[n].append((time.perf_counter() - t0) * 1e3)
    return times


def json_updates(path: Path, doc: dict, keys: list[str], args) -> list[float]:
    """Per-update milliseconds of the JSON manifest's whole-file rewrite."""

    def update(k: int) -> None:
        doc["scenes"][keys[k]] = record(k)
        old_save(path, doc)

    return timed(update, args.updates, args.budget)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,10000,100000", help="scenes recorded, comma-separated")
    ap.add_argument("--updates", type=int, default=50, help="updates timed per size and side")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per size for the JSON side, at most")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shutil.rmtree(WORK, ignore_errors=True)
    docs, keys, states, notes = {}, {}, {}, {}
    try:
        for n in sizes:
            folder = WORK / f"{n}"
            folder.mkdir(parents=True)
            docs[n] = json_manifest(folder / "manifest.json", n)
            size_mb = (folder / "manifest.json").stat().st_size / 1e6
            keys[n] = [f"scene-{(k * 7919) % n:06d}" for k in range(args.updates)]  # existing, spread out
            t0 = time.perf_counter()
            states[n] = RunState.open(str(folder), "bench")  # imports folder/manifest.json
            assert len(states[n]) == n
            notes[n] = (f"(migrated from JSON in {time.perf_counter() - t0:.2f} s)",
                        f"({size_mb:.1f} MB rewritten each time)")  # fmt: skip
        sqlite_ms = sqlite_updates(states, keys, args.updates)
    finally:
        for state in states.values():
            state.close()
    results: dict[str, dict[int, float]] = {"sqlite": {}, "json": {}}
    print(f"{'scenes':>8}  {'side':7} {'ms/update':>10}  {'updates':>7}  notes")
    for n in sizes:
        results["sqlite"][n] = statistics.median(sqlite_ms[n])
        print(f"{n:8d}  {'sqlite':7} {results['sqlite'][n]:10.2f}  {len(sqlite_ms[n]):7d}  {notes[n][0]}")
        ms = json_updates(WORK / f"{n}" / "old-manifest.json", docs[n], keys[n], args)
        results["json"][n] = statistics.median(ms)
        print(f"{n:8d}  {'json':7} {results['json'][n]:10.2f}  {len(ms):7d}  {notes[n][1]}")
    shutil.rmtree(WORK, ignore_errors=True)

    lo, hi = min(sizes), max(sizes)
    print()
    for side, label in (("sqlite", "SQLite run state"), ("json", "JSON manifest (before)")):
        r = results[side]
        print(f"{label:24} {hi:,} / {lo:,} scenes: {r[hi]:.2f} / {r[lo]:.2f} ms = {r[hi] / r[lo]:.2f}")
    print(f"JSON / SQLite at {hi:,} scenes: {results['json'][hi] / results['sqlite'][hi]:.0f}x")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
