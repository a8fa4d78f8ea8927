"""Process-level settings that libraries read once, when they load: OpenMP's wait policy and glibc
malloc's thresholds.

Both decide how fast torch runs on a CPU, and neither can be changed through torch:

- **OpenMP's wait policy.** OpenMP threads spin between parallel regions by default; beside other
  busy processes (another worker, another job) the spinning threads take cores from the ones doing
  work. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. The OpenMP runtime (libgomp, loaded
  with torch) reads the variable once, when it loads, so it must be in the environment before torch
  is first imported.
- **glibc malloc's thresholds.** Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``.
  Setting any malloc threshold through the environment also turns off glibc's dynamic mmap
  threshold, which stays at 128 KiB: every large activation buffer of a forward pass is then mapped
  and unmapped again each batch (about 4x the page faults and 4x the system time, measured). The
  environment is read when the process starts, but ``mallopt`` can still change the thresholds.

Nothing here imports torch or dask; the functions are cheap and safe to call more than once.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import NamedTuple

OMP_WAIT_POLICY = "OMP_WAIT_POLICY"

#: glibc's own ceiling for its dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB on 64-bit,
#: 512 KiB on 32-bit. A plain process converges to it, so fixing the threshold there gives a worker the
#: same steady state; larger allocations are mapped per use in either.
MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long) if sys.maxsize > 2**32 else 512 * 1024
#: Free memory kept at the top of a heap before it is given back: well above the mmap threshold, so
#: that buffers just under the threshold are not returned and faulted in again every batch.
TRIM_THRESHOLD = 4 * MMAP_THRESHOLD

#: Environment variables that make glibc fix its thresholds at start-up (no dynamic threshold).
MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_MALLOC_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold", "glibc.malloc.top_pad",
                    "glibc.malloc.mmap_max")  # fmt: skip

#: Set to ``off`` (or 0/no/false) in a process's environment to keep its malloc settings as they are.
OPT_OUT = "GEOSEG_MALLOPT"

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


class Applied(NamedTuple):
    """What a setting call found and did: ``changed`` whether this call changed anything, ``value``
    the setting in effect afterwards ("" where unknown), ``note`` why, in a few words."""

    changed: bool
    value: str
    note: str


def openmp_loaded() -> bool:
    """Whether an OpenMP runtime (or torch, which brings one) is already loaded in this process."""
    if "torch" in sys.modules:
        return True
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line or "libiomp" in line or "libomp." in line for line in maps)
    except OSError:  # not Linux: torch is the one we know of
        return False


def prefer_passive_openmp() -> Applied:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already has a wait policy.

    Effective only before the OpenMP runtime loads (before torch is first imported); later the
    variable is left alone, since setting it would claim a policy that is not in effect.
    """
    current = os.environ.get(OMP_WAIT_POLICY)
    if current is not None:
        return Applied(False, current, "already set")
    if openmp_loaded():
        return Applied(False, "", "OpenMP already loaded: its wait policy can no longer be set")
    os.environ[OMP_WAIT_POLICY] = "PASSIVE"
    return Applied(True, "PASSIVE", "set before OpenMP loads")


def glibc_version() -> str | None:
    """glibc's version ("2.36") when this process runs on glibc, else None."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    except (ValueError, OSError, AttributeError):  # not a glibc system
        return None
    return version if name == "glibc" else None


def malloc_thresholds_fixed() -> list[str]:
    """The environment settings that turned glibc's dynamic mmap threshold off in this process."""
    found = [k for k in MALLOC_ENV if k in os.environ]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    found += [t for t in _MALLOC_TUNABLES if t in tunables]
    return found


def restore_malloc_thresholds() -> Applied:
    """Where the environment fixed glibc's malloc thresholds (dask's nanny sets
    ``MALLOC_TRIM_THRESHOLD_``), set them with ``mallopt`` to what a plain process converges to:
    an mmap threshold of :data:`MMAP_THRESHOLD` and a trim threshold of :data:`TRIM_THRESHOLD`.

    A no-op off glibc, where glibc's dynamic threshold is still on, or with ``GEOSEG_MALLOPT=off``.
    """
    if os.environ.get(OPT_OUT, "").strip().lower() in ("off", "0", "no", "false"):
        return Applied(False, "", f"{OPT_OUT}=off")
    if glibc_version() is None:
        return Applied(False, "", "not glibc")
    fixed = malloc_thresholds_fixed()
    if not fixed:
        return Applied(False, "dynamic", "glibc's dynamic mmap threshold in effect")
    mallopt = ctypes.CDLL(None, use_errno=True).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    value = f"mmap_threshold={MMAP_THRESHOLD if ok_mmap else 'unchanged'} "
    value += f"trim_threshold={TRIM_THRESHOLD if ok_trim else 'unchanged'}"
    note = f"was fixed by {', '.join(fixed)}"
    if not (ok_mmap and ok_trim):
        note += "; mallopt refused a value"
    return Applied(ok_mmap or ok_trim, value, note)


_task_threads: int | None = None


def set_task_threads(threads: int | None) -> None:
    """The torch thread count each task thread of this process takes (a dask worker's, set by
    :class:`geoseg.batch.workerplugins.WorkerRuntime`); None: leave torch's own."""
    global _task_threads
    _task_threads = None if threads is None else max(1, int(threads))


def task_threads() -> int | None:
    """What :func:`set_task_threads` set in this process, or None."""
    return _task_threads
