"""dask.distributed worker plugins geoseg registers on a cluster (imported only when one is used)."""

from __future__ import annotations

import logging
import os
import sys

from distributed import WorkerPlugin

from geoseg.runtime import prefer_passive_openmp, restore_malloc_thresholds, set_task_threads

log = logging.getLogger("geoseg.worker")


class WorkerRuntime(WorkerPlugin):
    """Makes a worker process run torch as fast as a plain process, on clusters geoseg starts and on
    ones it joins (whose workers someone else started, with the nanny's settings):

    - ``OMP_WAIT_POLICY=PASSIVE`` before torch is first imported in the worker, unless the worker's
      environment has a wait policy (where torch was imported already, it is logged as not applied);
    - glibc's malloc thresholds restored with ``mallopt`` where the environment fixed them (the
      nanny's ``MALLOC_TRIM_THRESHOLD_``), so torch's activation buffers stay mapped between batches;
    - torch's thread count, on purpose: the workers on one host share its cores
      (cores // (workers on the host x threads per worker)) instead of each using all of them.

    What it did is kept in ``applied`` on the worker's copy (``worker.plugins[WorkerRuntime.name]``).
    """

    name = "geoseg-worker-runtime"

    def __init__(self, per_host: dict[str, int]) -> None:
        self.per_host = per_host
        self.applied: dict[str, object] = {}

    def setup(self, worker) -> None:
        omp = prefer_passive_openmp()  # first: importing torch below loads OpenMP
        if not omp.changed and not omp.value:
            log.warning("worker %s: OMP_WAIT_POLICY=PASSIVE not applied (%s)", worker.address, omp.note)
        malloc = restore_malloc_thresholds()
        host = worker.address.rsplit(":", 1)[0]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        nthreads = getattr(getattr(worker, "state", worker), "nthreads", 1) or 1
        threads = max(1, cores // max(1, self.per_host.get(host, 1) * nthreads))
        # OpenMP's thread count is kept per calling thread: tasks run in the worker's executor
        # threads, so each task applies it there too (geoseg.inference.tasks.apply_worker_threads).
        set_task_threads(threads)
        # torch is not imported here: a model without torch (a plug-in) never pays for it, and a
        # worker starts in a fraction of the time; tasks set the count where torch runs
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        self.applied = {
            "omp_wait_policy": omp._asdict(),
            "malloc": malloc._asdict(),
            "torch_threads": threads,
        }
        log.info("worker %s: OMP_WAIT_POLICY %s (%s); malloc %s (%s); torch threads %d", worker.address,
                 omp.value or "?", omp.note, malloc.value or "untouched", malloc.note, threads)  # fmt: skip


#: The former name, for code that registers it directly; it now also sets OpenMP and malloc.
TorchThreads = WorkerRuntime
