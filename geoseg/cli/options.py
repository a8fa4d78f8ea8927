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
    help="A checkpoint file (.safetensors), a shipped model's name (tankers-light, lungs-unet) or "
    "package.module:factory returning a segmenter.",
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


# -- the predict options, one flag each, from geoseg.inference.options -----------------------------
class _Parsed(click.ParamType):
    """A flag whose text an option's own parser reads (``--gsd native``, ``--slices 0,3,5-7``)."""

    def __init__(self, opt) -> None:
        self.opt = opt
        self.name = opt.metavar or opt.name

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        from geoseg.inference.options import OptionError, describe

        try:
            return self.opt.parse(value)
        except OptionError:
            self.fail(f"'{value}' is not {describe(self.opt)}", param, ctx)


def _click_option(field, opt):
    from geoseg.inference.options import PredictOptions

    dest = f"option_{field.name}"
    default = getattr(PredictOptions(), field.name)
    shown = "" if default is None or opt.kind is bool else f" [default: {default}]"
    kw = {"default": None, "help": opt.help + shown, "metavar": opt.metavar}
    if opt.kind is bool and "/" in opt.flag:
        return click.option(opt.flag, dest, **kw)
    if opt.kind is bool:
        return click.option(opt.flag, dest, is_flag=True, default=False, help=opt.help)
    if opt.parse is not None:
        kw["type"] = _Parsed(opt)
    elif isinstance(opt.kind, tuple):
        kw.update(type=click.Choice(opt.kind), metavar=None)
    elif opt.kind is int:
        kw["type"] = click.IntRange(opt.low, opt.high)
    elif opt.kind is float:
        kw["type"] = click.FloatRange(opt.low, opt.high)
    return click.option(opt.flag, dest, **kw)


def predict_options(command):
    """Give ``command`` one flag per option of :class:`~geoseg.inference.options.PredictOptions`
    (as the registry spells it) and pass it the resulting ``options``."""
    import dataclasses
    import functools

    from geoseg.inference.options import PredictOptions, registry

    declared = registry()

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        changes = {}
        for field, opt in declared:
            value = kwargs.pop(f"option_{field.name}")
            if value is None or (opt.kind is bool and "/" not in opt.flag and value is False):
                continue
            changes[field.name] = (not value) if opt.invert else value
        return command(*args, options=dataclasses.replace(PredictOptions(), **changes), **kwargs)

    for field, opt in reversed(declared):
        wrapper = _click_option(field, opt)(wrapper)
    return wrapper
