"""Dask clusters for a run: a LocalCluster geoseg starts, or one it joins by address."""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("geoseg.run")


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
    from dask.distributed import Client, LocalCluster

    if not log.isEnabledFor(logging.DEBUG):  # dask's own INFO chatter only with -vv
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cluster = None
    if address:
        client = Client(address, timeout="30s")
    else:
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=threads_per_worker, processes=True,
            dashboard_address=None, silence_logs=logging.CRITICAL,
        )  # fmt: skip
        client = Client(cluster)
    try:
        info = client.scheduler_info()["workers"]
        per_host: dict[str, int] = {}
        for addr in info:
            host = addr.rsplit(":", 1)[0]
            per_host[host] = per_host.get(host, 0) + 1
        from geoseg.workerplugins import TorchThreads

        client.register_plugin(TorchThreads(per_host))
        if events is not None:
            events("cluster", f"dask cluster {client.scheduler.address}: {len(info)} workers",
               scheduler=client.scheduler.address, workers=len(info))  # fmt: skip
        yield client, 1
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
