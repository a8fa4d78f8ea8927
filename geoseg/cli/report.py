"""``geoseg report``: one self-contained HTML page of a run's or a prediction's scenes and objects."""

from __future__ import annotations

import json
import os

import click

from geoseg.errors import GeosegError


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="JOB.yaml | PREDICTION...")
@click.option(
    "-s", "--scene", "scenes", multiple=True, help="The scene of each PREDICTION, in the same order."
)
@click.option(
    "-t",
    "--truth",
    "truths",
    multiple=True,
    help="True objects or masks of each PREDICTION, in the same order (optional).",
)
@click.option(
    "-o",
    "--output",
    default=None,
    help="The HTML file [default: the job's <outputs>/<name>.report.html, or report.html "
    "beside the first prediction].",
)
@click.option("--title", default=None, help="The page's title.")
@click.option(
    "--size",
    type=click.IntRange(256, 8192),
    default=1280,
    show_default=True,
    help="Largest side of each scene's picture, in pixels.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace OUTPUT if it exists (a job's report is always replaced)."
)
def report(targets, scenes, truths, output, title, size, overwrite):
    """Write an HTML report that works offline: each scene's picture (from its overviews), its
    objects drawn on it with pan and zoom, a table of every object (click a row to see it), the
    scores against a truth, and a run's summary.

    \b
    Examples:
      geoseg report jobs/nightly-tankers.yaml
      geoseg report demo/tankers.geojson -s demo/scene.tif -t demo/scene.truth.geojson -o demo/report.html
      geoseg report lungs.mask.png -s slice.png -t slice.truth.png
    """
    from geoseg.report.build import SceneEntry, run_entries, run_summary, write_report

    if len(targets) == 1 and targets[0].lower().endswith((".yaml", ".yml")):
        if scenes or truths:
            raise click.UsageError("--scene and --truth apply to predictions, not to a job")
        from geoseg.batch.jobs import load_job

        job = load_job(targets[0])
        path = os.path.join(job.out_dir, f"{job.name}.report.json")
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise GeosegError(f"job '{targets[0]}': no run report '{path}' (run the job first)") from None
        except (OSError, ValueError) as exc:
            raise GeosegError(f"run report '{path}': cannot be read ({exc})") from None
        out = output or os.path.join(job.out_dir, f"{job.name}.report.html")
        write_report(
            out,
            run_entries(doc, job.out_dir),
            title=title or f"geoseg run: {job.name}",
            summary=run_summary(doc),
            max_side=size,
            overwrite=overwrite or output is None,
        )
    else:
        if len(scenes) != len(targets):
            raise click.UsageError(
                f"give one --scene per prediction ({len(targets)} predictions, {len(scenes)} scenes)"
            )
        if truths and len(truths) != len(targets):
            raise click.UsageError(
                f"give one --truth per prediction, or none ({len(targets)} predictions, {len(truths)} truths)"
            )
        from geoseg.evaluation.masks import is_mask_input
        from geoseg.io.slices import file_stem

        entries = []
        for n, (pred, scene) in enumerate(zip(targets, scenes, strict=True)):
            for role, p in (("prediction", pred), ("scene", scene)) + (
                (("truth", truths[n]),) if truths else ()
            ):
                if "://" not in p and not os.path.exists(p):
                    raise click.BadParameter(f"{role} '{p}': no such file")
            mask = is_mask_input(pred) and not os.path.isdir(pred)
            entries.append(
                SceneEntry(
                    file_stem(scene),
                    image=scene,
                    vectors=None if mask else pred,
                    mask=pred if mask else None,
                    truth=truths[n] if truths else None,
                )
            )
        out = output or os.path.join(os.path.dirname(os.path.abspath(targets[0])), "report.html")
        write_report(
            out,
            entries,
            title=title
            or f"geoseg: {', '.join(e.name for e in entries[:3])}" + (" ..." if len(entries) > 3 else ""),
            max_side=size,
            overwrite=overwrite,
        )
    click.echo(out)
