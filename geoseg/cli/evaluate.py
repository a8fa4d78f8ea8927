"""``geoseg eval``: object precision, recall and F1 of predicted polygons against the truth, or
per-slice Dice and IoU of predicted masks against true masks."""

from __future__ import annotations

import click

from geoseg.evaluation.masks import evaluate_masks, is_mask_input, write_overlays
from geoseg.evaluation.masks import summary as mask_summary
from geoseg.evaluation.objects import dumps, evaluate, read_vectors, summary
from geoseg.io.atomic import check_writable, write_json


@click.command(name="eval")
@click.argument("pred")
@click.argument("truth")
@click.option(
    "--iou", "iou_threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a summary.")
@click.option("-o", "--output", default=None, help="Also write the JSON report to this file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report file.")
@click.option("--overlays", default=None, help="Masks: write PNG overlays of the worst and best slices here.")
@click.option("--images", default=None, help="Masks: image file or folder shown under the overlays.")
@click.option("--worst", type=click.IntRange(1), default=5, show_default=True, help="Masks: slices listed.")
@click.option("--slice-axis", type=click.IntRange(0, 2), default=2, show_default=True, help="NIfTI axis.")
def eval_(pred, truth, iou_threshold, as_json, output, overwrite, overlays, images, worst, slice_axis):
    """Compare predicted objects PRED with true objects TRUTH (any vector format, any CRS), or
    predicted masks with true masks (files or folders of .png/.tif/.npy masks or NIfTI volumes,
    matched by name): per-slice Dice and IoU, where an empty truth scores 1.0 with an empty
    prediction and 0.0 with any predicted pixel.
    """
    if is_mask_input(pred) or is_mask_input(truth):
        if output:
            check_writable(output, overwrite=overwrite)
        report = evaluate_masks(pred, truth, axis=slice_axis, worst=worst)
        if output:
            write_json(output, report, overwrite=overwrite)
        if overlays:
            write_overlays(report, pred, truth, overlays, images=images, axis=slice_axis, overwrite=overwrite)
        click.echo(dumps(report) if as_json else mask_summary(report))
        return
    report = evaluate(
        read_vectors(pred, "prediction"), read_vectors(truth, "truth"), iou_threshold=iou_threshold
    )
    report.update(prediction=str(pred), truth=str(truth))
    if output:
        write_json(output, report, overwrite=overwrite)
    click.echo(dumps(report) if as_json else summary(report))
