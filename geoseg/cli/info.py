"""``geoseg info MODEL|SCENE``: a model's card or a scene's summary, as text or JSON (like ``rio info``)."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("target")
@click.option("-m", "--model", default="tankers-light", show_default=True,
              help="Scenes: count the tiles this model's tile size and overlap make.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(target, model, as_json):
    """Describe TARGET: a checkpoint (.safetensors), a shipped model's name (tankers-light,
    lungs-unet) or package.module:factory, or a scene (raster, slice, stack or volume).

    \b
    Examples:
      geoseg info tankers-light
      geoseg info scene.tif --json
    """
    from geoseg.api import info as describe

    card = describe(target, model=model)
    if as_json:
        click.echo(json.dumps(card, indent=2, sort_keys=True, default=str))
        return
    click.echo(_text(card))


def _text(card: dict) -> str:
    if card["kind"] == "model":
        order = [
            "model",
            "path",
            "size_mb",
            "model_hash",
            "architecture",
            "task",
            "classes",
            "bands",
            "in_channels",
            "normalization",
            "tile_size",
            "overlap",
            "max_gsd",
            "min_area",
            "object_limits",
            "measures",
            "rotated_view",
            "config",
            "metrics",
            "training",
            "geoseg_version",
        ]
    else:
        order = [
            "path",
            "kind",
            "driver",
            "width",
            "height",
            "bands",
            "slices",
            "dtypes",
            "nodata",
            "crs",
            "gsd_m",
            "lonlat_bounds",
            "transform",
            "blocks",
            "compression",
            "overviews",
            "pixel_space",
            "at_model",
        ]
    lines = []
    for key in order + sorted(k for k in card if k not in order and k not in ("kind", "format")):
        if key not in card or card[key] is None:
            continue
        value = card[key]
        if key == "training" and isinstance(value, dict):
            lines.append(f"{'training':<15} {value.get('command', '')}")
            rest = {k: v for k, v in value.items() if k != "command"}
            value, key = rest, ""
        shown = (
            json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else str(value)
        )
        lines.append(f"{key:<15} {shown}")
    return "\n".join(lines)
