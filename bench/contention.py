"""``geoseg predict`` beside CPU-bound processes: wall time quiet, beside one and beside two
``python3 -c 'while 1: pass'``, against the fair share of the cores.

With torch on all C cores and k busy processes beside it, a fair scheduler gives the run C / (C + k)
of the machine: the fair-share slowdown is (C + k) / C (on 2 cores: 1.5x beside one, 2.0x beside
two). OpenMP's threads spin-wait by default, and beside busy processes the spinning takes the cores
the working threads need; ``geoseg predict`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set a
policy) before torch loads. Done means within 10 % of fair share (on 2 cores <= 1.65x and <= 2.2x).

``--baseline default`` also runs the command without geoseg's setting (OpenMP's own default),
``--baseline active`` with ``OMP_WAIT_POLICY=ACTIVE``; runs are interleaved (quiet, one, two busy
processes; each mode in turn), so drift in the machine's load falls on both alike. Each run is a
fresh process; its user and system time come from ``os.wait4``.

    .venv/bin/python bench/contention.py [--size 3072] [--baseline none|default|active] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "contention"
MODEL = ROOT / "geoseg" / "weights" / "tankers-light.safetensors"
HOG = "while 1: pass"
# the CLI with geoseg's wait-policy step taken out: OpenMP's own default, as before the fix
WITHOUT_FIX = (
    "import sys, geoseg.runtime as r; r.prefer_passive_openmp = lambda: None; "
    "from geoseg.cli.main import cli; sys.argv[0] = 'geoseg'; cli()"
)


def _scene(size: int) -> Path:
    scene = WORK / f"tankers_{size}.tif"
    if not scene.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "geoseg.cli.main", "-q", "synth", "tankers", str(scene), "--size",
             str(size), "--gsd", "1.5", "--seed", "7"], check=True,
        )  # fmt: skip
    return scene


def _predict(scene: Path, mode: str) -> tuple[float, float, float]:
    """One ``geoseg predict`` in a fresh process: (wall, user, system) seconds."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    args = ["predict", str(scene), "-m", str(MODEL), "-o", str(WORK / f"out-{mode}.geojson"), "--overwrite"]
    if mode == "fix":
        cmd = [sys.executable, "-m", "geoseg.cli.main", "-q", *args]
    elif mode == "default":
        cmd = [sys.executable, "-c", WITHOUT_FIX, "-q", *args]
    else:  # a policy the user chose: geoseg keeps it
        env["OMP_WAIT_POLICY"] = mode.upper()
        cmd = [sys.executable, "-m", "geoseg.cli.main", "-q", *args]
    log = WORK / f"predict-{mode}.log"
    with open(log, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU times, not the busy ones'
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text())
        raise SystemExit(f"geoseg predict failed ({mode})")
    return wall, usage.ru_utime, usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=3072, help="side of the synthetic tanker scene (1.5 m)")
    ap.add_argument("--baseline", choices=["none", "default", "active"], default="none",
                    help="also run without geoseg's OMP_WAIT_POLICY=PASSIVE")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the median is reported")
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside it")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    scene = _scene(args.size)
    modes = ["fix"] + ([] if args.baseline == "none" else [args.baseline])
    print(f"{cores} cores; load average {os.getloadavg()[0]:.2f} at the start; scene {scene.name}")
    runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.repeat):
        for busy in args.busy:
            for mode in modes:
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(busy)]
                try:
                    time.sleep(0.5 if busy else 0)  # let them take their cores first
                    runs.setdefault((mode, busy), []).append(_predict(scene, mode))
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
    label = {"fix": "PASSIVE (geoseg)", "default": "OpenMP default", "active": "ACTIVE"}
    print(f"{'OMP_WAIT_POLICY':18} {'busy':>4} {'wall s':>8} {'user s':>8} {'sys s':>7} {'/ quiet':>8} "
          f"{'fair':>6} {'done at':>8}")  # fmt: skip
    for mode in modes:
        quiet = statistics.median(r[0] for r in runs[(mode, 0)]) if (mode, 0) in runs else None
        for busy in args.busy:
            wall, user, system = (statistics.median(r[i] for r in runs[(mode, busy)]) for i in range(3))
            fair = max(1.0, (cores + busy) / cores)
            ratio = wall / quiet if quiet else float("nan")
            verdict = "" if not busy else ("ok" if ratio <= 1.1 * fair else "over")
            print(f"{label[mode]:18} {busy:4d} {wall:8.1f} {user:8.1f} {system:7.1f} {ratio:7.2f}x "
                  f"{fair:5.2f}x {1.1 * fair:7.2f}x {verdict}")  # fmt: skip
    if len(modes) > 1:  # the fix against the baseline, case by case
        other = label[modes[1]]
        for busy in args.busy:
            fix, base = (statistics.median(r[0] for r in runs[(m, busy)]) for m in modes)
            what = " (quiet: what sleeping threads cost, if anything)" if not busy else ""
            print(f"beside {busy} busy: PASSIVE / {other} wall {fix / base:.2f}x{what}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (busy processes of this script included)")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
