"""``geoseg predict``: segment one scene and write its objects."""

from __future__ import annotations

import json
import math
import os
import sys

import click

from geoseg.cli.options import (
    bands_opt,
    format_opt,
    model_arg_opt,
    model_opt,
    output_opt,
    overwrite_opt,
    parse_model_args,
)
from geoseg.errors import GeosegError
from geoseg.inference.blend import BLENDS
from geoseg.inference.engine import run_scene
from geoseg.inference.options import PredictOptions
from geoseg.inference.plan import Outputs, open_check
from geoseg.io.atomic import write_text_atomic
from geoseg.io.refs import SceneRef
from geoseg.io.slices import parse_slices
from geoseg.io.vectors import check_writable, format_for
from geoseg.models.segmenter import ModelSpec, check_device, default_batch_size, get_segmenter


class _Gsd(click.ParamType):
    """A ground sample distance in metres (> 0), or 'native' (0: the scene's own grid)."""

    name = "gsd"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        if str(value).strip().lower() == "native":
            return 0.0
        try:
            v = float(value)
        except ValueError:
            v = -1.0
        if not (math.isfinite(v) and v > 0):
            self.fail(f"'{value}' is not a ground sample distance in metres (> 0) or 'native'", param, ctx)
        return v


GSD = _Gsd()


@click.command()
@click.argument("scene")
@model_opt
@model_arg_opt
@output_opt
@format_opt
@overwrite_opt
@bands_opt
@click.option("--crs", default=None, help="CRS to assign to a scene that has none (e.g. EPSG:32618).")
@click.option(
    "--tile-size", type=click.IntRange(16), default=None, help="Tile size (default: the model's, else 512)."
)
@click.option(
    "--overlap", type=click.IntRange(0), default=None, help="Tile overlap (default: the model's, else 64)."
)
@click.option(
    "--batch-size", type=click.IntRange(1), default=None,
    help="Tiles per forward pass (default: 4 on a CPU, 16 on a GPU).",
)  # fmt: skip
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--mask-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--min-area",
    type=click.FloatRange(0),
    default=None,
    help="Drop regions under this many pixels, from outlines and masks alike "
    "(default: the checkpoint's min_area, else none).",
)
@click.option(
    "--any-size", is_flag=True,
    help="Keep objects outside the sizes the checkpoint was trained on (its object_limits).",
)  # fmt: skip
@click.option(
    "--gsd", type=GSD, default=None, metavar="METRES|native",
    help="Read the scene resampled to this ground sample distance (instance models). Default: the "
    "checkpoint's max_gsd for scenes coarser than that; 'native' keeps the scene's own grid.",
)  # fmt: skip
@click.option(
    "--rotated-view/--no-rotated-view", default=None,
    help="Also run each tile turned by 45 degrees and take every object from the view where it lies "
    "closer to the image axes: anchorages of diagonal hulls come apart, at three times the model "
    "time (Mask R-CNN). Default: the checkpoint's setting.",
)  # fmt: skip
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Parallel workers.")
@click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
    help="Where the model runs: auto takes a GPU where there is one.",
)  # fmt: skip
@click.option("--stats", "stats_path", default=None, help="Also write run statistics as JSON here.")
@click.option(
    "--blend", type=click.Choice(BLENDS), default="gaussian", show_default=True,
    help="Weights of overlapping tiles (semantic models).",
)  # fmt: skip
@click.option(
    "--mask", "mask_path", default=None,
    help="Also write the class mask (semantic models): .tif (GeoTIFF for rasters), .png, .npy; "
    ".nii/.nii.gz or .npy for volumes.",
)  # fmt: skip
@click.option(
    "--slice-axis", type=click.IntRange(0, 2), default=None, help="NIfTI axis to slice (default 2)."
)
@click.option("--slices", "slice_list", default=None, help="Slices of a stack or volume, e.g. 0,4,10-20.")
@click.option("--hu-window", default=None, metavar="CENTER,WIDTH", help="Clip DICOM values (HU) to a window.")
@click.pass_context
def predict(ctx, scene, model, model_args, output, fmt, overwrite, bands, crs, tile_size, overlap,
            batch_size, score_threshold, mask_threshold, min_area, any_size, gsd, rotated_view, workers,
            device, stats_path, blend, mask_path, slice_axis, slice_list, hu_window):  # fmt: skip
    """Segment SCENE tile by tile and write the merged objects.

    \b
    Examples:
      geoseg predict scene.tif -m tankers.safetensors -o tankers.geojson
      geoseg predict scene.tif -m geoseg.models.plugins:threshold_instances --model-arg threshold=100 \\
          --bands 1 -o objects.gpkg
      geoseg predict ct.dcm -m lungs-unet.safetensors --mask lungs.png -o lungs.geojson
      geoseg predict volume.nii.gz -m lungs-unet.safetensors --mask lungs.nii.gz -o lungs.gpkg

    Semantic models blend overlapping tiles (--blend) and can write a class mask (--mask). NumPy,
    DICOM and NIfTI inputs are slices in pixel space: their GeoJSON outlines are in pixel
    coordinates (column, row), marked "coordinates": "pixel", not RFC 7946 lon/lat.
    """
    fmt = format_for(output, fmt)
    check_writable(output, overwrite=overwrite)
    if mask_path is not None and os.path.abspath(mask_path) == os.path.abspath(output):
        raise click.BadParameter("the mask and the outlines need different files", param_hint="--mask")
    spec = ModelSpec(model, parse_model_args(model_args))
    ref = SceneRef(scene, bands, crs)
    try:
        slices = parse_slices(slice_list)
        window = tuple(float(v) for v in hu_window.split(",")) if hu_window else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if window is not None and len(window) != 2:
        raise click.BadParameter(f"'{hu_window}' is not CENTER,WIDTH", param_hint="--hu-window")
    open_check(ref, axis=slice_axis, hu_window=window)
    semantic = get_segmenter(spec, "cpu").task == "semantic"
    if mask_path is not None and not semantic:
        raise click.BadParameter("masks are written for semantic models only", param_hint="--mask")
    if semantic and gsd:
        raise click.BadParameter(
            "resampling is for instance models: masks keep the scene's grid", param_hint="--gsd"
        )
    if semantic and rotated_view:
        raise click.BadParameter("the rotated view is for Mask R-CNN models", param_hint="--rotated-view")
    try:
        device = check_device(device)
    except GeosegError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    opts = PredictOptions(
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size or default_batch_size(device),
        score_threshold=score_threshold,
        mask_threshold=mask_threshold,
        min_area=min_area,
        object_limits=not any_size,
        gsd=gsd,
        rotated_view=rotated_view,
        workers=workers,
        device=device,
    )
    quiet = ctx.obj.get("quiet", False)
    semantic_options = (
        {"blend": blend, "mask_path": mask_path, "axis": slice_axis, "slices": slices, "hu_window": window}
        if semantic
        else {}
    )
    with _progress(enabled=not quiet and sys.stderr.isatty()) as progress:
        outcome = run_scene(ref, spec, opts, Outputs(vectors=output, fmt=fmt, overwrite=overwrite),
                            progress=progress, **semantic_options)  # fmt: skip
    if stats_path:
        write_json(stats_path, outcome.stats, overwrite=overwrite)
    if not quiet:
        s = outcome.stats
        native, used = s.get("native_gsd_m"), s.get("gsd_m")
        resampled = (
            f" at {used:g} m (resampled from {native:g} m)" if native and used and native != used else ""
        )
        click.echo(
            f"{s['objects']} objects from {s['tiles_run']} tiles{resampled} ({s['tiles_skipped']} nodata "
            f"tiles skipped) in {s['seconds']:.1f} s -> {output}",
            err=True,
        )


def write_json(path: str, data: dict, *, overwrite: bool) -> None:
    """Write ``data`` as JSON atomically."""
    check_writable(path, overwrite=overwrite)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


class _progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("batches", total=None)

        def update(done: int, total: int) -> None:
            self.bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
