"""Options shared by geoseg commands, spelled the same everywhere."""

from __future__ import annotations

import click
import yaml

output_opt = click.option(
    "-o", "--output", default="-", show_default=True, help="Output file ('-' writes GeoJSON to stdout)."
)
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
format_opt = click.option(
    "--format",
    "fmt",
    type=click.Choice(["geojson", "gpkg", "fgb", "parquet"]),
    default=None,
    help="Output format (default: from the output's extension).",
)
model_opt = click.option(
    "-m",
    "--model",
    required=True,
    help="A checkpoint file (.safetensors) or package.module:factory returning a segmenter.",
)
model_arg_opt = click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for a module:factory model (repeatable; values parsed as YAML scalars).",
)


def parse_bands(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(b) for b in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of band numbers") from None
    if any(b < 1 for b in bands):
        raise click.BadParameter(f"'{value}': band numbers start at 1")
    return bands


bands_opt = click.option(
    "-b", "--bands", callback=parse_bands, default=None, help="1-based bands to read, e.g. 1,2,3."
)


def parse_model_args(values: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    out = []
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--model-arg")
        out.append((key, yaml.safe_load(raw) if raw else None))
    return tuple(out)
