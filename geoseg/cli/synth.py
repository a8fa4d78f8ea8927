"""``geoseg synth``: seeded synthetic scenes with their truth."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import overwrite_opt
from geoseg.io.atomic import check_writable


@click.group()
def synth():
    """Make synthetic scenes (and their truth) for training, tests and demos."""


@synth.command()
@click.argument("out")
@click.option("--size", type=click.IntRange(256), default=8000, show_default=True, help="Pixels a side.")
@click.option(
    "--gsd", type=click.FloatRange(0.3, 5.0), default=1.5, show_default=True, help="Metres per pixel."
)
@click.option("--crs", default="EPSG:32631", show_default=True, help="A projected CRS in metres (UTM).")
@click.option("--tankers", "n_tankers", type=click.IntRange(0), default=None, help="Default: ~1 per 1.5 km².")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--land/--no-land", default=True, show_default=True, help="A coastline with land.")
@click.option("--clouds/--no-clouds", default=False, show_default=True, help="Thin clouds.")
@click.option("--truth", default=None, help="Truth GeoJSON (default: OUT with .truth.geojson).")
@overwrite_opt
def tankers(out, size, gsd, crs, n_tankers, seed, land, clouds, truth, overwrite):
    """Write a tanker scene OUT (3-band GeoTIFF, tiled, compressed) and its truth as GeoJSON."""
    from geoseg.synth.tankers import tanker_scene

    truth = truth or str(Path(out).with_suffix("")) + ".truth.geojson"
    check_writable(out, overwrite=overwrite)
    check_writable(truth, overwrite=overwrite)
    try:
        _, frame = tanker_scene(out, size=size, gsd=gsd, crs=crs, n_tankers=n_tankers, seed=seed,
                                land=land, clouds=clouds, truth=truth)  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--crs") from None
    clusters = int((frame["cluster"] >= 0).sum())
    click.echo(
        f"{out}: {size} x {size} px at {gsd} m, {len(frame)} tankers ({clusters} in clusters); truth {truth}",
        err=True,
    )


@synth.command()
@click.argument("out")
@click.option(
    "--slices", "n_slices", type=click.IntRange(1), default=40, show_default=True, help="Slices in all."
)
@click.option("--size", type=click.IntRange(64), default=512, show_default=True, help="Pixels a side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--patients",
    type=click.IntRange(1),
    default=None,
    help="Phantoms to spread the slices over (default: 1 per 40 slices).",
)
@overwrite_opt
@click.pass_context
def lungs(ctx, out, n_slices, size, seed, patients, overwrite):
    """Write chest-CT-like slices in HU (OUT/images/<id>.npy), true lung masks (OUT/masks/<id>.png,
    255 = lung) and OUT/lungs.json; each patient's slices walk from above the apices to the abdomen."""
    from collections import Counter

    from geoseg.synth.lungs import write_lungs

    if patients is not None and patients > n_slices:
        raise click.BadParameter(f"{patients} patients for {n_slices} slices", param_hint="--patients")
    index = write_lungs(out, n_slices, size=size, seed=seed, patients=patients, overwrite=overwrite)
    if not (ctx.obj or {}).get("quiet"):
        kinds = Counter(s["kind"] for s in index["slices"])
        summary = ", ".join(f"{kinds.get(k, 0)} {k}" for k in ("apex", "lung", "base", "abdomen"))
        n_patients = index["patients"]
        click.echo(
            f"{out}: {n_slices} slices of {size} x {size} from {n_patients} patients ({summary})", err=True
        )
