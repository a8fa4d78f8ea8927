"""Dask clusters for a run: a LocalCluster geoseg starts, or one it joins by address.

Workers should run torch as fast as a plain process does. Two of dask's nanny settings stand in the
way (``distributed.nanny.pre-spawn-environ``, applied to ``os.environ`` before each worker process is
spawned, so the worker inherits them):

- ``MALLOC_TRIM_THRESHOLD_=65536`` fixes glibc's malloc thresholds, so torch's activation buffers are
  mapped and unmapped every batch (a worker ran at 0.6x of a plain process);
- no OpenMP wait policy: OpenMP threads spin, and fight the host's other workers for its cores.

A LocalCluster geoseg starts gets neither problem (:func:`start_local_cluster`); on every cluster,
started or joined, the :class:`~geoseg.batch.workerplugins.WorkerRuntime` plug-in repairs what it can inside
each worker process.

Many workers on one host also pay for their own bookkeeping: each samples its threads' stacks for the
dashboard's profile every 10 ms and wakes for ticks and system metrics several times a second. Sixteen
idle workers and their scheduler on two cores took 0.48 CPU-seconds a second that way (0.06 with the
settings below), a quarter of the machine, which the batches' reading and polygonising needed. A
LocalCluster geoseg starts turns the profiler off and wakes less often (:func:`quiet_worker_config`);
its scheduler hands a worker a new root task only when it has a free thread (``worker-saturation``
1.0), so a worker that is late (it merged a scene) is not given a batch another worker could have
run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from geoseg.runtime import OMP_WAIT_POLICY, OPT_OUT

log = logging.getLogger("geoseg.run")

_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"


def nanny_config() -> dict[str, object]:
    """dask config overrides under which geoseg creates a LocalCluster's nannies.

    The nanny reads its environment settings once, when it is created (``Nanny.__init__``): a value
    of None drops a key (``_get_env_variables``), and a variable already in ``os.environ`` wins over
    the config. So: MALLOC_TRIM_THRESHOLD_ is dropped (unless ``GEOSEG_MALLOPT=off``), and
    ``OMP_WAIT_POLICY=PASSIVE`` is added unless the user's config names a wait policy (the user's
    environment wins by itself). The other defaults (OMP_NUM_THREADS=1 and friends) stay: the worker
    plug-in sets torch's threads explicitly.
    """
    import dask.config

    pre = dask.config.get(_PRE_SPAWN, default={}) or {}
    environ = dask.config.get("distributed.nanny.environ", default={}) or {}
    overrides: dict[str, object] = {}
    if os.environ.get(OPT_OUT, "").strip().lower() not in ("off", "0", "no", "false"):
        overrides[f"{_PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_"] = None
    if OMP_WAIT_POLICY not in pre and OMP_WAIT_POLICY not in environ:
        overrides[f"{_PRE_SPAWN}.{OMP_WAIT_POLICY}"] = "PASSIVE"
    return overrides


#: dask config key -> (dask's default, what a LocalCluster geoseg starts uses), see the module docstring
QUIET_WORKERS: dict[str, tuple[object, object]] = {
    "distributed.worker.profile.enabled": (True, False),
    "distributed.admin.tick.interval": ("20ms", "500ms"),
    "distributed.admin.system-monitor.interval": ("500ms", "2s"),
    "distributed.worker.memory.monitor-interval": ("100ms", "500ms"),
    "distributed.scheduler.worker-saturation": (1.1, 1.0),
}


def quiet_worker_config() -> dict[str, object]:
    """Overrides of :data:`QUIET_WORKERS` for a LocalCluster geoseg starts: each key whose value is
    still dask's default (a value the user configured is kept)."""
    import dask.config

    return {key: ours for key, (default, ours) in QUIET_WORKERS.items()
            if dask.config.get(key, default=default) == default}  # fmt: skip


@contextlib.contextmanager
def _environ_kept(keys: set[str]) -> Iterator[None]:
    """Put ``keys`` of ``os.environ`` back as they were on exit: the nanny writes its pre-spawn
    variables into this process's environment (OMP_NUM_THREADS=1 and the rest), where they would
    reach every process this one starts later."""
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            elif os.environ.get(k) != v:
                os.environ[k] = v


def _nanny_keys() -> set[str]:
    import dask.config

    return {*(dask.config.get(_PRE_SPAWN, default={}) or {}), OMP_WAIT_POLICY, "PYTHONHASHSEED"}


@contextlib.contextmanager
def _responsive_scheduler(seconds: float = 0.001) -> Iterator[None]:
    """While a LocalCluster geoseg started runs: a shorter GIL switch interval in this process
    (``sys.setswitchinterval``, 5 ms by default), which holds the cluster's scheduler. Its event
    loop thread then waits less for the GIL while this process plans the next scenes, and hands
    out batches sooner (16 loopback workers: time in scenes 1.31x -> 1.29x of the ideal, medians of
    five runs). Put back as it was on exit."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def start_local_cluster(n_workers: int, threads_per_worker: int = 1, *, quiet: bool = True, **kwargs):
    """A LocalCluster of ``n_workers`` processes (dask's spawn start method) whose workers start
    without the nanny's malloc trim variable and with ``OMP_WAIT_POLICY=PASSIVE`` (see
    :func:`nanny_config`), and keep their bookkeeping quiet (:func:`quiet_worker_config`; ``quiet=False``
    keeps dask's own settings, for comparison). Neither dask's global config nor this process's
    environment keeps a trace.
    """
    import dask.config
    from dask.distributed import LocalCluster  # imports distributed first: its defaults are in place

    overrides = {**nanny_config(), **(quiet_worker_config() if quiet else {})}
    with _environ_kept(_nanny_keys()), dask.config.set(overrides):
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
            dashboard_address=None, **kwargs,
        )  # fmt: skip


@contextlib.contextmanager
def open_cluster(
    workers: int, *, processes: bool = True, threads_per_worker: int = 1, address: str | None = None,
    events=None,
):  # fmt: skip
    """Yield ``(client or None, local thread workers)``: a client of the cluster at ``address``, of
    a LocalCluster of ``workers`` processes, or None (run on ``workers`` threads in this process)."""
    n = workers
    if not address and (n <= 1 or not processes):
        yield None, max(1, n)
        return
    from dask.distributed import Client

    if not log.isEnabledFor(logging.DEBUG):  # dask's own INFO chatter only with -vv
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cluster = None
    with contextlib.ExitStack() as stack:
        if address:
            client = Client(address, timeout="30s")
        else:
            stack.enter_context(_environ_kept(_nanny_keys()))  # a restarted worker's nanny writes again
            cluster = start_local_cluster(n, threads_per_worker, silence_logs=logging.CRITICAL)
            stack.callback(cluster.close)
            stack.enter_context(_responsive_scheduler())
            client = Client(cluster)
        stack.callback(client.close)
        info = client.scheduler_info()["workers"]
        per_host: dict[str, int] = {}
        for addr in info:
            host = addr.rsplit(":", 1)[0]
            per_host[host] = per_host.get(host, 0) + 1
        from geoseg.batch.workerplugins import WorkerRuntime

        client.register_plugin(WorkerRuntime(per_host))
        if events is not None:
            events("cluster", f"dask cluster {client.scheduler.address}: {len(info)} workers",
               scheduler=client.scheduler.address, workers=len(info))  # fmt: skip
        yield client, 1
