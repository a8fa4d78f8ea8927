"""dask.distributed worker plugins geoseg registers on a cluster (imported only when one is used)."""

from __future__ import annotations

import os

from distributed import WorkerPlugin


class TorchThreads(WorkerPlugin):
    """Sets torch's thread count in every worker, on purpose: the workers on one host share its
    cores (cores // (workers on the host x threads per worker)) instead of each using all of them."""

    name = "geoseg-torch-threads"

    def __init__(self, per_host: dict[str, int]) -> None:
        self.per_host = per_host

    def setup(self, worker) -> None:
        host = worker.address.rsplit(":", 1)[0]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        nthreads = getattr(getattr(worker, "state", worker), "nthreads", 1) or 1
        threads = max(1, cores // max(1, self.per_host.get(host, 1) * nthreads))
        # OpenMP's thread count is kept per calling thread: tasks run in the worker's executor
        # threads, so each task applies it there too (geoseg.pipeline.apply_worker_threads).
        os.environ["GEOSEG_TORCH_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
