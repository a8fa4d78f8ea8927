"""Process-level settings for fast workers: OpenMP's wait policy before torch loads, the nanny's
malloc trim variable kept out of LocalClusters geoseg starts, and the worker plug-in's mallopt
repair on workers someone else started (with the nanny's variable)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geoseg import runtime

REPO = Path(__file__).resolve().parents[1]
ENV_KEYS = ("MALLOC_TRIM_THRESHOLD_", "OMP_WAIT_POLICY", runtime.OPT_OUT)
PLUGIN = "geoseg-worker-runtime"


def _python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (this process's environment stays as it is) with the
    wait-policy and malloc variables only as given; it prints one JSON document."""
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       cwd=REPO, env={**base, **env}, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_passive_openmp_unless_the_user_chose_a_policy():
    code = """
        import json, os
        from geoseg import runtime
        first = runtime.prefer_passive_openmp()
        policy = os.environ.get("OMP_WAIT_POLICY")
        import torch  # OpenMP reads the variable now; too late for a later call
        if first.changed:
            del os.environ["OMP_WAIT_POLICY"]
        late = runtime.prefer_passive_openmp()
        print(json.dumps({"first": first, "policy": policy, "late": late,
                          "late_env": os.environ.get("OMP_WAIT_POLICY")}))
    """
    unset = _python(code)
    assert unset["first"][:2] == [True, "PASSIVE"] and unset["policy"] == "PASSIVE"
    assert unset["late"][0] is False and "already loaded" in unset["late"][2]
    assert unset["late_env"] is None  # not set where it would not be in effect
    mine = _python(code, OMP_WAIT_POLICY="ACTIVE")
    assert mine["first"][:2] == [False, "ACTIVE"] and mine["policy"] == "ACTIVE"


def test_cli_sets_the_policy_before_a_subcommand_or_torch_is_imported():
    code = """
        import importlib.abc, json, os, sys
        seen = {}

        class Watch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name in ("torch", "geoseg.cli.predict") and name not in seen:
                    seen[name] = os.environ.get("OMP_WAIT_POLICY")
                return None

        sys.meta_path.insert(0, Watch())
        from geoseg.cli.main import cli
        imported_early = "torch" in sys.modules
        try:
            cli.main(["predict", "--help"], standalone_mode=False)
        except SystemExit:
            pass
        print(json.dumps({"torch_early": imported_early, "seen": seen}))
    """
    r = _python(code)
    assert r["torch_early"] is False
    assert r["seen"]["geoseg.cli.predict"] == "PASSIVE"
    assert r["seen"].get("torch", "PASSIVE") == "PASSIVE"


def test_library_import_leaves_the_environment_alone():
    r = _python(
        "import json, os, geoseg, geoseg.inference.tasks; "
        "print(json.dumps(os.environ.get('OMP_WAIT_POLICY')))"
    )
    assert r is None


def test_nanny_config_respects_the_users_choices(monkeypatch):
    import dask.config
    import distributed  # noqa: F401  (its defaults first, as in open_cluster)

    from geoseg.batch.cluster import nanny_config

    monkeypatch.delenv(runtime.OPT_OUT, raising=False)
    assert nanny_config() == {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.nanny.pre-spawn-environ.OMP_WAIT_POLICY": "PASSIVE",
    }
    with dask.config.set({"distributed.nanny.environ.OMP_WAIT_POLICY": "ACTIVE"}):
        assert "distributed.nanny.pre-spawn-environ.OMP_WAIT_POLICY" not in nanny_config()
    monkeypatch.setenv(runtime.OPT_OUT, "off")
    assert "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_" not in nanny_config()


def _worker_bookkeeping(dask_worker):
    import dask.config

    return {
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "profiling": "profile" in dask_worker.periodic_callbacks,
        "tick": dask.config.get("distributed.admin.tick.interval"),
        "monitor": dask.config.get("distributed.worker.memory.monitor-interval"),
    }


def test_quiet_worker_config_keeps_what_the_user_configured():
    import dask.config
    import distributed  # noqa: F401  (its defaults first, as in open_cluster)

    from geoseg.batch.cluster import QUIET_WORKERS, quiet_worker_config

    assert quiet_worker_config() == {key: ours for key, (_, ours) in QUIET_WORKERS.items()}
    assert quiet_worker_config()["distributed.worker.profile.enabled"] is False
    with dask.config.set({"distributed.worker.profile.enabled": True,  # the default: still overridden
                          "distributed.scheduler.worker-saturation": 2.0,
                          "distributed.admin.tick.interval": "50ms"}):  # fmt: skip
        chosen = quiet_worker_config()
    assert "distributed.worker.profile.enabled" in chosen
    assert "distributed.scheduler.worker-saturation" not in chosen
    assert "distributed.admin.tick.interval" not in chosen


@pytest.fixture(scope="module")
def clean_environ():
    """This process's environment without the variables under test, as a user's shell would be."""
    saved = {k: os.environ.pop(k) for k in ENV_KEYS if k in os.environ}
    yield
    os.environ.update(saved)


def _environ(keys=("MALLOC_TRIM_THRESHOLD_", "OMP_WAIT_POLICY")):
    return lambda: {k: os.environ.get(k) for k in keys}


def test_started_cluster_workers_lack_the_trim_variable_and_config_is_unchanged(clean_environ):
    """The LocalCluster open_cluster starts (start_local_cluster; 1 worker to keep it fast), joined
    through open_cluster as a run does, which registers the plug-in."""
    import dask.config
    import distributed  # noqa: F401  (its config defaults are in place before the snapshot)

    from geoseg.batch.cluster import open_cluster, start_local_cluster

    config = copy.deepcopy(dask.config.config)
    environ = {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    with start_local_cluster(1) as cluster, open_cluster(1, address=cluster.scheduler_address) as (client, _):
        # the override lasted as long as the cluster's creation (a Client sets the default scheduler)
        assert dask.config.config["distributed"]["nanny"] == config["distributed"]["nanny"]
        env = list(client.run(_environ()).values())[0]
        applied = list(client.run(lambda dask_worker: dask_worker.plugins[PLUGIN].applied).values())[0]
        quiet = list(client.run(_worker_bookkeeping).values())[0]
        saturation = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    assert env == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_WAIT_POLICY": "PASSIVE"}
    # the worker's bookkeeping is quiet: no stack profiler, ticks and metrics less often
    assert quiet == {"profile": False, "profiling": False, "tick": "500ms", "monitor": "500ms"}
    assert saturation == 1.0
    assert applied["malloc"]["changed"] is False  # nothing to repair
    assert applied["omp_wait_policy"]["value"] == "PASSIVE"
    assert applied["torch_threads"] == len(os.sched_getaffinity(0))  # the host's only worker, 1 thread
    assert dask.config.config == config
    assert {k: os.environ.get(k) for k in environ} == environ  # the nanny's variables did not stay here


def _fault_probe():
    """A function counting the minor page faults of allocating and freeing a 1 MiB buffer 50 times
    (nested, so that it is shipped to the worker by value, not imported there). Above the 128 KiB
    that a fixed glibc threshold leaves, below the 4 MiB from which numpy asks for huge pages."""

    def faults() -> int:
        import resource

        import numpy as np

        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            buf = np.ones((1 << 20) // 8)
            del buf
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    return faults


@pytest.fixture(scope="module")
def nanny_worker(clean_environ):
    """A worker started by dask's defaults (like ``dask worker ADDRESS``): the nanny's
    MALLOC_TRIM_THRESHOLD_ is in its environment, and geoseg has not touched it yet."""
    from dask.distributed import LocalCluster

    saved = dict(os.environ)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    for k in set(os.environ) - set(saved):  # the nanny writes its variables into this process
        del os.environ[k]
    os.environ.update(saved)
    yield cluster
    cluster.close()


def test_plugin_restores_malloc_thresholds_on_a_joined_nanny_worker(nanny_worker):
    from dask.distributed import Client

    from geoseg.batch.cluster import open_cluster
    from geoseg.runtime import MMAP_THRESHOLD, TRIM_THRESHOLD

    probe = _fault_probe()
    with Client(nanny_worker.scheduler_address) as client:
        assert list(client.run(_environ()).values()) == [
            {"MALLOC_TRIM_THRESHOLD_": "65536", "OMP_WAIT_POLICY": None}
        ]
        before = list(client.run(probe).values())[0]
        with open_cluster(1, address=nanny_worker.scheduler_address) as (joined, _):
            assert joined is not None
        applied = list(client.run(lambda dask_worker: dask_worker.plugins[PLUGIN].applied).values())[0]
        after = list(client.run(probe).values())[0]
        env = list(client.run(_environ()).values())[0]
    if runtime.glibc_version() is None:
        assert applied["malloc"]["changed"] is False
        return
    assert applied["malloc"]["changed"] is True, applied
    assert applied["malloc"]["value"] == f"mmap_threshold={MMAP_THRESHOLD} trim_threshold={TRIM_THRESHOLD}"
    assert "MALLOC_TRIM_THRESHOLD_" in applied["malloc"]["note"]
    # torch was not imported in the worker yet: the policy could still be set
    assert applied["omp_wait_policy"]["changed"] is True and env["OMP_WAIT_POLICY"] == "PASSIVE"
    # the repair works: freed buffers stay mapped instead of being faulted in again every time
    assert before > 50 * 128 and after < before / 4, (before, after)


def test_the_gil_switch_interval_is_short_while_a_started_cluster_runs_and_put_back_after():
    import sys

    from geoseg.batch.cluster import _responsive_scheduler

    before = sys.getswitchinterval()
    with _responsive_scheduler():
        assert sys.getswitchinterval() <= 0.001
    assert sys.getswitchinterval() == before
