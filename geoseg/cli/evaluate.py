"""``geoseg eval``: object precision, recall and F1 of predicted polygons against the truth."""

from __future__ import annotations

import click

from geoseg.cli.predict import write_json
from geoseg.evaluate import dumps, evaluate, read_vectors, summary


@click.command(name="eval")
@click.argument("pred")
@click.argument("truth")
@click.option(
    "--iou", "iou_threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a summary.")
@click.option("-o", "--output", default=None, help="Also write the JSON report to this file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report file.")
def eval_(pred, truth, iou_threshold, as_json, output, overwrite):
    """Compare predicted objects PRED with true objects TRUTH (any vector format, any CRS)."""
    report = evaluate(
        read_vectors(pred, "prediction"), read_vectors(truth, "truth"), iou_threshold=iou_threshold
    )
    report.update(prediction=str(pred), truth=str(truth))
    if output:
        write_json(output, report, overwrite=overwrite)
    click.echo(dumps(report) if as_json else summary(report))
