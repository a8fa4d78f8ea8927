"""Do forward passes go to the GPU workers, and do those GPUs wait on polygonising? ``geoseg run``
joins a loopback cluster whose workers declare a ``GPU`` resource, with the latency plug-in standing
in for a GPU-bound detector.

The cluster: ``--gpus`` worker processes declaring ``GPU=1`` (each with ``--gpu-threads`` task
threads: one for the forward pass, the rest for CPU work) and ``--cpu-workers`` worker processes of
one thread without it. The latency plug-in (``geoseg.models.plugins:latency_instances``) waits 0.1 s
per tile as a GPU keeps its caller waiting; each scene is 1024 x 1024, 16 tiles of 256 in batches of
4, so S scenes hold S x 1.6 s of forward passes and the ideal time with G GPUs is S x 1.6 / G. From
the scheduler's task stream it prints where the forward passes ran (all on GPU workers is the
routing), where polygonising ran, the time in scenes against the ideal, and the share of the time
the GPUs' forward-pass slots were busy.

    .venv/bin/python bench/gpu_routing.py [--scenes 8] [--gpus 2] [--gpu-threads 1,2] [--cpu-workers 2]

Each ``--gpu-threads`` value is one run on a fresh cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rerun_line  # noqa: E402
from bench.engine_scaling import SIDE, TILE, latency_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "engine-scaling"  # the scenes of bench/engine_scaling.py


def run(scenes: int, gpus: int, gpu_threads: int, cpu_workers: int, delay: float) -> dict:
    from distributed import Client, Nanny, Scheduler, SpecCluster, get_task_stream

    from geoseg.batch.jobs import load_job
    from geoseg.batch.runner import run_job

    job = latency_job(WORK / f"routing-{gpu_threads}", scenes, delay, "routing")
    workers = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": gpu_threads, "resources": {"GPU": 1}}}
               for i in range(gpus)}  # fmt: skip
    workers.update({f"cpu{i}": {"cls": Nanny, "options": {"nthreads": 1}} for i in range(cpu_workers)})
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(gpus + cpu_workers)
        info = client.scheduler_info()["workers"]
        gpu_addrs = {a for a, w in info.items() if (w.get("resources") or {}).get("GPU")}
        with get_task_stream(client) as ts:  # the scheduler records every task from here on
            report = run_job(load_job(job), scheduler=cluster.scheduler_address).as_dict()
        stream = ts.data
    if report["failed"]:
        raise SystemExit(f"{report['failed']} scenes failed: {report['scenes']}")

    def name(rec) -> str:
        key = rec["key"][0] if isinstance(rec["key"], tuple) else rec["key"]
        return str(key).rsplit("-", 1)[0]

    def seconds(rec) -> float:
        return sum(s["stop"] - s["start"] for s in rec["startstops"] if s["action"] == "compute")

    infer = [r for r in stream if name(r).startswith("infer_instances")]
    vectorise = [r for r in stream if name(r).startswith("vectorise_instances")]
    return {
        "scenes_seconds": report["scenes_seconds"],
        "infer": len(infer),
        "infer_on_gpu": sum(r["worker"] in gpu_addrs for r in infer),
        "vectorise": len(vectorise),
        "vectorise_on_cpu_workers": sum(r["worker"] not in gpu_addrs for r in vectorise),
        "gpu_busy": sum(seconds(r) for r in infer),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--gpus", type=int, default=2, help="worker processes declaring GPU=1")
    ap.add_argument("--gpu-threads", default="1,2", help="task threads of each GPU worker, one run per value")
    ap.add_argument("--cpu-workers", type=int, default=2, help="1-thread worker processes without a GPU")
    ap.add_argument("--delay", type=float, default=0.1, help="model seconds per tile")
    args = ap.parse_args()
    per_scene = (SIDE // TILE) ** 2 * args.delay
    ideal = args.scenes * per_scene / args.gpus
    print(f"{args.scenes} scenes of {per_scene:.1f} s of forward passes, {args.gpus} GPU workers, "
          f"{args.cpu_workers} CPU workers: ideal {ideal:.2f} s")  # fmt: skip
    print(f"{'GPU worker threads':>18} {'in scenes s':>11} {'/ideal':>7} {'GPU busy':>8} "
          f"{'passes on GPUs':>14} {'polygonising on CPU workers':>27}")  # fmt: skip
    for threads in (int(t) for t in args.gpu_threads.split(",")):
        r = run(args.scenes, args.gpus, threads, args.cpu_workers, args.delay)
        busy = r["gpu_busy"] / (args.gpus * r["scenes_seconds"])
        print(f"{threads:>18} {r['scenes_seconds']:>11.2f} {r['scenes_seconds'] / ideal:>7.2f} {busy:>8.0%} "
              f"{r['infer_on_gpu']:>6} of {r['infer']:<5} {r['vectorise_on_cpu_workers']:>17} of "
              f"{r['vectorise']}")  # fmt: skip
    print("GPU busy: forward-pass compute time on the GPU workers / (GPUs x time in scenes)")
    print(rerun_line(sys.argv))


if __name__ == "__main__":
    main()
