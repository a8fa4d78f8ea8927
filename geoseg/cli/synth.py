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
@click.option(
    "--clusters", type=click.FloatRange(0, 1), default=0.4, show_default=True,
    help="Share of placements that are anchorage clusters (2-4 tankers side by side).",
)  # fmt: skip
@click.option(
    "--family", type=click.Choice(["a", "b"]), default="a", show_default=True,
    help="a: the training scenes; b: another sea, sensor and fleet with clutter, for evaluation only.",
)  # fmt: skip
@click.option("--haze", is_flag=True, help="Haze over the scene (family b).")
@click.option(
    "--randomize", is_flag=True,
    help="Domain-randomised sea colour and state, sun, deck colours, glint, haze, gain (family a, training).",
)  # fmt: skip
@click.option("--truth", default=None, help="Truth GeoJSON (default: OUT with .truth.geojson).")
@overwrite_opt
def tankers(out, size, gsd, crs, n_tankers, seed, land, clouds, clusters, family, haze, randomize, truth,
            overwrite):  # fmt: skip
    """Write a tanker scene OUT (3-band GeoTIFF, tiled, compressed) and its truth as GeoJSON.
    Family b scenes are never to be trained on: `geoseg train maskrcnn` refuses them."""
    from geoseg.synth.tankers import tanker_scene
    from geoseg.synth.tankers_b import tanker_scene_b

    if haze and family != "b":
        raise click.BadParameter("haze is drawn in family b scenes only", param_hint="--haze")
    if randomize and family == "b":
        raise click.BadParameter("family b is drawn one way only", param_hint="--randomize")
    truth = truth or str(Path(out).with_suffix("")) + ".truth.geojson"
    check_writable(out, overwrite=overwrite)
    check_writable(truth, overwrite=overwrite)
    try:
        if family == "b":
            _, frame = tanker_scene_b(out, size=size, gsd=gsd, crs=crs, n_tankers=n_tankers, seed=seed,
                                      land=land, clouds=clouds, haze=haze, cluster_fraction=clusters,
                                      truth=truth)  # fmt: skip
        else:
            _, frame = tanker_scene(out, size=size, gsd=gsd, crs=crs, n_tankers=n_tankers, seed=seed,
                                    land=land, clouds=clouds, cluster_fraction=clusters, randomize=randomize,
                                    truth=truth)  # fmt: skip
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
@click.option(
    "--family",
    type=click.Choice(["a", "b"]),
    default="a",
    show_default=True,
    help="a: the training phantoms; b: a second phantom family built another way, for evaluation only.",
)
@click.option(
    "--randomize", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="SHARE",
    help="Share of domain-randomised patients and scanners (family a, for training).",
)  # fmt: skip
@overwrite_opt
@click.pass_context
def lungs(ctx, out, n_slices, size, seed, patients, family, randomize, overwrite):
    """Write chest-CT-like slices in HU (OUT/images/<id>.npy), true lung masks (OUT/masks/<id>.png,
    255 = lung) and OUT/lungs.json; each patient's slices walk from above the apices to the abdomen.
    Family b is never to be trained on: `geoseg train unet` refuses it."""
    from collections import Counter

    from geoseg.synth.lungs import write_lungs

    if patients is not None and patients > n_slices:
        raise click.BadParameter(f"{patients} patients for {n_slices} slices", param_hint="--patients")
    if randomize and family == "b":
        raise click.BadParameter("family b is drawn one way only", param_hint="--randomize")
    index = write_lungs(out, n_slices, size=size, seed=seed, patients=patients, family=family,
                        randomize=randomize, overwrite=overwrite)  # fmt: skip
    if not (ctx.obj or {}).get("quiet"):
        kinds = Counter(s["kind"] for s in index["slices"])
        summary = ", ".join(f"{kinds.get(k, 0)} {k}" for k in ("apex", "lung", "base", "abdomen"))
        n_patients = index["patients"]
        click.echo(
            f"{out}: {n_slices} slices of {size} x {size} from {n_patients} patients ({summary})", err=True
        )
