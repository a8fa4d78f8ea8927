"""``geoseg predict``: segment one scene and write its objects (a shell over :func:`geoseg.predict`)."""

from __future__ import annotations

import os
import sys

import click

from geoseg.api import predict as predict_scene_api
from geoseg.cli.options import (
    bands_opt,
    format_opt,
    model_arg_opt,
    model_opt,
    output_opt,
    overwrite_opt,
    parse_model_args,
    predict_options,
)
from geoseg.inference.plan import OptionConflict
from geoseg.io.atomic import check_writable, write_json
from geoseg.io.vectors import format_for


@click.command()
@click.argument("scene")
@model_opt
@model_arg_opt
@output_opt
@format_opt
@overwrite_opt
@bands_opt
@click.option("--crs", default=None, help="CRS to assign to a scene that has none (e.g. EPSG:32618).")
@predict_options
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Parallel workers.")
@click.option("--stats", "stats_path", default=None, help="Also write run statistics as JSON here.")
@click.option(
    "--mask", "mask_path", default=None,
    help="Also write the class mask (semantic models): .tif (GeoTIFF for rasters), .png, .npy; "
    ".nii/.nii.gz or .npy for volumes.",
)  # fmt: skip
@click.pass_context
def predict(ctx, scene, model, model_args, output, fmt, overwrite, bands, crs, options, workers, stats_path,
            mask_path):  # fmt: skip
    """Segment SCENE tile by tile and write the merged objects.

    \b
    Examples:
      geoseg predict scene.tif -m tankers-light -o tankers.geojson
      geoseg predict scene.tif -m geoseg.models.plugins:threshold_instances --model-arg threshold=100 \\
          --bands 1 -o objects.gpkg
      geoseg predict ct.dcm -m lungs-unet --mask lungs.png -o lungs.geojson
      geoseg predict volume.nii.gz -m lungs-unet --mask lungs.nii.gz -o lungs.gpkg

    MODEL is a checkpoint file, the name of a model shipped with geoseg (tankers-light, lungs-unet)
    or package.module:factory. Semantic models blend overlapping tiles (--blend) and can write a
    class mask (--mask). NumPy, DICOM and NIfTI inputs are slices in pixel space: their GeoJSON
    outlines are in pixel coordinates (column, row), marked "coordinates": "pixel", not RFC 7946
    lon/lat.
    """
    fmt = format_for(output, fmt)
    check_writable(output, overwrite=overwrite)
    if mask_path is not None and os.path.abspath(mask_path) == os.path.abspath(output):
        raise click.BadParameter("the mask and the outlines need different files", param_hint="--mask")
    if stats_path:
        check_writable(stats_path, overwrite=overwrite)
    quiet = ctx.obj.get("quiet", False)
    with _progress(enabled=not quiet and sys.stderr.isatty()) as progress:
        try:
            result = predict_scene_api(
                scene, model, output=output, format=fmt, overwrite=overwrite, mask=mask_path, bands=bands,
                crs=crs, model_args=dict(parse_model_args(model_args)), workers=workers, options=options,
                progress=progress,
            )  # fmt: skip
        except OptionConflict as exc:
            raise click.BadParameter(str(exc), param_hint=exc.flag) from None
    if stats_path:
        write_json(stats_path, result.stats, overwrite=overwrite)
    if not quiet:
        s = result.stats
        native, used = s.get("native_gsd_m"), s.get("gsd_m")
        resampled = (
            f" at {used:g} m (resampled from {native:g} m)" if native and used and native != used else ""
        )
        click.echo(
            f"{s['objects']} objects from {s['tiles_run']} tiles{resampled} ({s['tiles_skipped']} nodata "
            f"tiles skipped) in {s['seconds']:.1f} s -> {output}",
            err=True,
        )


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
