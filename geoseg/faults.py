"""Crash injection for the kill tests of resumable runs (armed only by ``GEOSEG_CRASH_AT``)."""

from __future__ import annotations

import os

_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL at a named point, for crash tests of resumable runs.

    Armed only by the environment: ``GEOSEG_CRASH_AT=NAME`` or ``NAME:N`` (the N-th time the point
    is reached in this process). Points: ``batch-cached``, ``scene-written``, ``manifest-written``,
    ``output-temp-written``. A no-op otherwise.
    """
    spec = os.environ.get("GEOSEG_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] >= int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
