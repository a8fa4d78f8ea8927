"""What both chest-CT phantom families (:mod:`geoseg.synth.lungs`, :mod:`geoseg.synth.lungs_b`)
share: how slices are spread over patients, and how a lung density is named as a condition."""

from __future__ import annotations


def slices_per_patient(n_slices: int, patients: int | None, size: int) -> list[int]:
    """How many of ``n_slices`` each of ``patients`` phantoms gets (default: one patient per 40
    slices); bad counts or sizes raise ValueError naming the option."""
    if n_slices < 1:
        raise ValueError(f"--slices must be at least 1, got {n_slices}")
    patients = patients or max(1, -(-n_slices // 40))
    if patients > n_slices:
        raise ValueError(f"--patients {patients} is more than --slices {n_slices}")
    if size < 64:
        raise ValueError(f"--size must be at least 64 pixels, got {size}")
    return [n_slices // patients + (1 if i < n_slices % patients else 0) for i in range(patients)]


def density_class(lung_hu: float) -> str:
    """A patient's lung density as a condition: emphysema (< -880 HU), dense (> -720 HU) or normal."""
    return "emphysema" if lung_hu < -880 else "dense" if lung_hu > -720 else "normal"
