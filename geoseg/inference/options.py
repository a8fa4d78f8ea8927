"""The options of a prediction, declared once.

:class:`PredictOptions` is the registry: each option is a dataclass field whose metadata (an
:class:`Option`) says how it is spelled on the command line (``geoseg predict --tile-size``) and in a
job file (``tiling.tile_size``), which values it takes, whether it changes the objects found (and so
enters a job's parameter hash), and which model family it applies to. The command line's flags, the
job schema and its messages, the parameter hash and the option table in ``docs/options.md`` are all
derived from it: adding an option is adding a field here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: what ``device`` accepts
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
BLENDS = ("constant", "cosine", "gaussian")


class OptionError(ValueError):
    """A value an option does not take; the message says what it takes (no option name)."""


@dataclass(frozen=True)
class Option:
    """How one field of :class:`PredictOptions` is spelled and checked outside Python.

    ``key``: the job key (``section.name``); ``flag``: the command-line flag (``--name``, or
    ``--name/--no-name`` for a three-state switch whose default, None, defers to the model);
    ``kind``: int, float, bool or str, or a tuple of allowed words; ``low``/``high``: bounds;
    ``parse``: turns text (a flag's value, a job's string) into the value, raising
    :class:`OptionError`; ``hash``: ``"always"`` (enters the parameter hash), ``"changed"``
    (enters it only when it differs from the default, so that hashes of runs made before the option
    existed stay valid) or None (does not change the objects found: batch size, device); ``family``:
    ``"instance"`` or ``"semantic"`` when only one model family takes it; ``invert``: the spelled
    option is the negation of the field (``--any-size`` sets ``object_limits=False``).
    """

    key: str
    flag: str
    help: str
    kind: Any = str
    low: float | None = None
    high: float | None = None
    parse: Callable[[Any], Any] | None = None
    hash: str | None = "changed"
    family: str | None = None
    invert: bool = False
    metavar: str | None = None
    takes: str | None = None  # what it takes, in words, where the type alone does not say
    yaml: Any = None  # its node in the job schema (geoseg.batch.jobs), where the kind alone does not say
    conflict: str | None = None  # the error when it is set for a model of the other family
    default_text: str | None = None  # what the default (None) means, for the docs

    @property
    def name(self) -> str:
        """The option's name where it is spelled (the job key's last part)."""
        return self.key.rpartition(".")[2]

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]


def option(default: Any, **spec) -> Any:
    """A :class:`PredictOptions` field spelled as ``spec`` says (see :class:`Option`)."""
    return dataclasses.field(default=default, metadata={"option": Option(**spec)})


# -- parsers of text values ------------------------------------------------------------------------
def parse_gsd(value: Any) -> float:
    """A ground sample distance in metres (> 0), or ``native`` (0: the scene's own grid).

    >>> parse_gsd("native"), parse_gsd("1.5")
    (0.0, 1.5)
    """
    if isinstance(value, str) and value.strip().lower() == "native":
        return 0.0
    if isinstance(value, bool):
        raise OptionError(f"must be a number > 0 or one of native (got {value!r})")
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise OptionError(f"must be a number > 0 or one of native (got {value!r})")
    return v


def parse_slices(value: Any) -> tuple[int, ...]:
    """``"0,3,5-7"`` (or a list of numbers) -> ``(0, 3, 5, 6, 7)``.

    >>> parse_slices("0,3,5-7")
    (0, 3, 5, 6, 7)
    """
    if isinstance(value, list | tuple):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise OptionError(f"must be slice numbers like 0,3,5-7 (got {value!r})")
        return tuple(value)
    text = str(value)
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise OptionError(f"'{text}' is not a list of slice numbers like 0,3,5-7")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return tuple(out)


def parse_hu_window(value: Any) -> tuple[float, float]:
    """``"40,400"`` or ``[40, 400]`` -> ``(40.0, 400.0)``: a window's centre and width.

    >>> parse_hu_window("-600,1500")
    (-600.0, 1500.0)
    """
    parts = value.split(",") if isinstance(value, str) else value
    try:
        window = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        window = ()
    if len(window) != 2 or not all(math.isfinite(v) for v in window) or window[1] <= 0:
        raise OptionError(f"must be CENTER,WIDTH with a width > 0, e.g. 40,400 (got {value!r})")
    return window  # type: ignore[return-value]


def parse_device(value: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(value, str) or not DEVICE.match(value):
        raise OptionError(f"must be auto, cpu, cuda or cuda:N (got {value!r})")
    return value


# -- the registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictOptions:
    """Every setting of a prediction. The fields with an :class:`Option` are the user's (the
    command line, job files and :func:`geoseg.predict` keywords); the others are internal knobs.

    ``tile_size``/``overlap`` None: the model's own, else 512/64; ``batch_size`` None: 4 on a
    CPU, 16 on a GPU.
    """

    tile_size: int | None = option(
        None, key="tiling.tile_size", flag="--tile-size", kind=int, low=16, hash="always",
        default_text="the model's, else 512",
        help="Tile size in pixels (default: the model's, else 512).",
    )  # fmt: skip
    overlap: int | None = option(
        None, key="tiling.overlap", flag="--overlap", kind=int, low=0, hash="always",
        default_text="the model's, else 64",
        help="Overlap of neighbouring tiles in pixels (default: the model's, else 64).",
    )  # fmt: skip
    batch_size: int | None = option(
        None, key="tiling.batch_size", flag="--batch-size", kind=int, low=1, hash=None,
        default_text="4 on a CPU, 16 on a GPU",
        help="Tiles per forward pass (default: 4 on a CPU, 16 on a GPU).",
    )  # fmt: skip
    score_threshold: float = option(
        0.5, key="predict.score_threshold", flag="--score-threshold", kind=float, low=0, high=1,
        hash="always", family="instance", help="Keep objects scored at least this.",
    )  # fmt: skip
    mask_threshold: float = option(
        0.5, key="predict.mask_threshold", flag="--mask-threshold", kind=float, low=0, high=1,
        hash="always",
        help="A pixel is the object's (or the class's) where its probability is at least this.",
    )  # fmt: skip
    min_area: float | None = option(
        None, key="predict.min_area", flag="--min-area", kind=float, low=0, hash="always",
        default_text="the model's, else 0",
        help="Drop regions under this many pixels, from outlines and masks alike (default: the "
        "checkpoint's min_area, else none).",
    )  # fmt: skip
    object_limits: bool = option(
        True, key="predict.any_size", flag="--any-size", kind=bool, invert=True, family="instance",
        help="Keep objects outside the sizes the checkpoint was trained on (its object_limits).",
    )  # fmt: skip
    fill_holes: bool = option(
        True, key="predict.keep_holes", flag="--keep-holes", kind=bool, invert=True, family="instance",
        help="Keep holes in objects of the classes the checkpoint says have none (its fill_holes): by "
        "default their holes are filled, so a hull is one solid outline.",
    )  # fmt: skip
    match_radiometry: bool = option(
        True, key="predict.no_match_radiometry", flag="--no-match-radiometry", kind=bool, invert=True,
        help="Read the scene as it is where the checkpoint records its training data's radiometry (its "
        "radiometry): by default each band of a raster is shifted so that the scene's median (over a "
        "sample of 64 windows) meets the training scenes', as for another sea colour or haze, and a CT "
        "slice so that the air outside the body reads as in the training slices (another scanner's "
        "calibration).",
    )  # fmt: skip
    complete: bool = option(
        True, key="predict.no_complete", flag="--no-complete", kind=bool, invert=True, family="semantic",
        help="Leave the classes the checkpoint completes (its complete: lung grown to the air-filled "
        "region it mostly fills) as the model predicted them.",
    )  # fmt: skip
    gsd: float | None = option(
        None, key="predict.gsd", flag="--gsd", kind=float, parse=parse_gsd, family="instance",
        default_text="the model's max_gsd, for coarser scenes",
        metavar="METRES|native", takes="a ground sample distance in metres (> 0) or 'native'",
        yaml=("number|word", ("native",)),
        conflict="resampling is for instance models: masks keep the scene's grid",
        help="Read the scene resampled to this ground sample distance. Default: the checkpoint's max_gsd "
        "for scenes coarser than that; 'native' keeps the scene's own grid.",
    )  # fmt: skip
    rotated_view: bool | None = option(
        None, key="predict.rotated_view", flag="--rotated-view/--no-rotated-view", kind=bool,
        default_text="the model's, else off",
        family="instance", conflict="the rotated view is for Mask R-CNN models",
        help="Also run turned by 45 degrees each tile where a hull lies diagonally, and take every object "
        "from the view where it lies closer to the image axes: anchorages of diagonal hulls come apart "
        "(Mask R-CNN; a turned tile costs twice a tile, tiles without a diagonal hull nothing more). "
        "Default: the checkpoint's setting.",
    )  # fmt: skip
    blend: str = option(
        "gaussian", key="predict.blend", flag="--blend", kind=BLENDS, family="semantic",
        help="Weights of overlapping tiles.",
    )  # fmt: skip
    spacing: float | None = option(
        None, key="predict.spacing", flag="--spacing", kind=float, parse=parse_gsd, family="semantic",
        default_text="the model's spacing_mm",
        metavar="MM|native", takes="a pixel spacing in millimetres (> 0) or 'native'",
        yaml=("number|word", ("native",)),
        conflict="pixel spacing is for semantic models on slices",
        help="See slices (DICOM, NIfTI) at this pixel spacing, resampled from the spacing their file "
        "records; masks and outlines come back on the input's grid. Default: the checkpoint's "
        "spacing_mm; 'native' keeps each slice's own grid.",
    )  # fmt: skip
    slices: tuple[int, ...] | None = option(
        None, key="predict.slices", flag="--slices", kind=str, parse=parse_slices, family="semantic",
        default_text="every slice",
        metavar="LIST", takes="slice numbers like 0,3,5-7",
        help="Slices of a stack or volume, e.g. 0,4,10-20 (default: every slice).",
    )  # fmt: skip
    slice_axis: int | None = option(
        None, key="predict.slice_axis", flag="--slice-axis", kind=int, low=0, high=2, family="semantic",
        default_text="2",
        help="NIfTI axis to slice (default 2).",
    )  # fmt: skip
    hu_window: tuple[float, float] | None = option(
        None, key="predict.hu_window", flag="--hu-window", kind=str, parse=parse_hu_window,
        default_text="no window",
        family="semantic", metavar="CENTER,WIDTH", takes="CENTER,WIDTH (a list of two numbers in a job)",
        yaml=("list", float), help="Clip DICOM values (HU) to a window.",
    )  # fmt: skip
    simplify: float | None = option(
        None, key="predict.simplify", flag="--simplify", kind=float, low=0, metavar="PX",
        default_text="off: exact pixel edges",
        help="Simplify outlines by up to this many pixels (Douglas-Peucker for objects; a coverage "
        "simplification that keeps shared edges for semantic regions), keeping every polygon valid.",
    )  # fmt: skip
    device: str = option(
        "auto", key="predict.device", flag="--device", kind=str, parse=parse_device, hash=None,
        takes="auto, cpu, cuda or cuda:N",
        metavar="auto|cpu|cuda[:N]", help="Where the model runs: auto takes a GPU where there is one.",
    )  # fmt: skip
    # -- internal knobs (no spelling outside Python) --
    # a part ending within this many pixels of a tile edge that cuts the scene may go on beyond it
    # (a soft mask often stops short of the edge): it counts as cut when a neighbouring tile sees
    # the object continue past that edge. None: a quarter of the overlap, at least 4
    edge_margin: int | None = None
    iou_threshold: float = 0.5
    ios_threshold: float = 0.5
    workers: int = 1  # threads of an in-process run (a cluster has its own)

    def spelled(self) -> dict[str, Any]:
        """The user's options by their spelled names (``any_size``, not ``object_limits``)."""
        out = {}
        for f, opt in registry():
            value = getattr(self, f.name)
            out[opt.name] = (not value) if opt.invert else value
        return out

    def changed(self) -> dict[str, Any]:
        """The user's options that differ from their defaults, by spelled name."""
        base = PredictOptions().spelled()
        return {k: v for k, v in self.spelled().items() if v != base[k]}


def registry() -> list[tuple[dataclasses.Field, Option]]:
    """The declared options, in declaration order: ``(field, Option)``."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(PredictOptions) if "option" in f.metadata]


def lookup(name: str) -> tuple[dataclasses.Field, Option]:
    """The option spelled ``name`` (``any_size``) or held in field ``name`` (``object_limits``)."""
    for f, opt in registry():
        if name in (opt.name, f.name):
            return f, opt
    raise KeyError(name)


def describe(opt: Option) -> str:
    """What values ``opt`` takes, in words (for messages and docs)."""
    if opt.takes:
        return opt.takes
    if isinstance(opt.kind, tuple):
        return "one of " + ", ".join(opt.kind)
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[opt.kind]
    if opt.low is not None and opt.high is not None:
        return f"{words} from {opt.low:g} to {opt.high:g}"
    if opt.low is not None:
        return f"{words} of at least {opt.low:g}"
    return words


def convert(name: str, value: Any) -> Any:
    """``value`` (a Python or YAML value; text only where the option has a parser) checked and
    converted for the option spelled ``name``, as a field value (an inverted option is negated when
    ``name`` is its spelling, not its field: ``no_complete=True`` and ``complete=False`` agree).
    Raises :class:`OptionError` saying what the option takes (not naming it: callers do)."""
    f, opt = lookup(name)
    if value is None:
        return None
    if opt.parse is not None:
        value = opt.parse(value)
    elif isinstance(opt.kind, tuple):
        if value not in opt.kind:
            raise OptionError(f"must be {describe(opt)} (got {value!r})")
    elif opt.kind is bool:
        if not isinstance(value, bool):
            raise OptionError(f"must be true or false (got {value!r})")
    elif opt.kind in (int, float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (opt.kind is int and not isinstance(value, int)):
            kind = "an integer" if opt.kind is int else "a number"
            raise OptionError(f"must be {kind} (got {value!r})")
        if (opt.low is not None and value < opt.low) or (opt.high is not None and value > opt.high):
            if opt.high is None:
                raise OptionError(f"must be at least {opt.low:g} (got {value!r})")
            raise OptionError(f"must be from {opt.low:g} to {opt.high:g} (got {value!r})")
        value = opt.kind(value)
    elif opt.kind is str and not isinstance(value, str):
        raise OptionError(f"must be a string (got {value!r})")
    return (not value) if opt.invert and name == opt.name else value


def from_spelled(values: Mapping[str, Any], base: PredictOptions | None = None):
    """:class:`PredictOptions` from options by spelled name (``{"tile_size": 256, "any_size":
    True}``), on top of ``base``. Raises KeyError for an unknown name, :class:`OptionError` for a bad
    value (with the name in front)."""
    changes = {}
    for name, value in values.items():
        f, _ = lookup(name)
        try:
            changes[f.name] = convert(name, value)
        except OptionError as exc:
            raise OptionError(f"'{name}' {exc}") from None
    return dataclasses.replace(base or PredictOptions(), **changes)


def conflicts(opts: PredictOptions, task: str) -> tuple[Option, str] | None:
    """The first option set in ``opts`` that a model of ``task`` cannot take, with its message."""
    for f, opt in registry():
        if opt.conflict and opt.family and opt.family != task and getattr(opts, f.name):
            return opt, opt.conflict
    return None


def schema_node(opt: Option) -> Any:
    """The option's node in the job schema (see :mod:`geoseg.batch.jobs`)."""
    return opt.yaml if opt.yaml is not None else opt.kind


def hash_params(opts: PredictOptions, extra: Mapping[str, Any] | None = None) -> str:
    """Hash of every option that changes the objects found (``Option.hash``) plus ``extra`` (the
    model's arguments): a job's scenes are done again when it changes."""
    params = dict(extra or {})
    defaults = PredictOptions().spelled()
    for name, value in opts.spelled().items():
        rule = lookup(name)[1].hash
        if rule == "always" or (rule == "changed" and value != defaults[name]):
            params[name] = value
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def markdown_table() -> str:
    """The option table of ``docs/options.md``, made from the registry."""
    rows = ["| option | command line | job key | takes | default | applies to |", "|---|---|---|---|---|---|"]
    defaults = PredictOptions().spelled()
    for _, opt in registry():
        default = defaults[opt.name]
        shown = opt.default_text if default is None else json.dumps(default)
        rows.append(
            f"| `{opt.name}` | `{opt.flag}` | `{opt.key}` | {describe(opt)} | {shown} | "
            f"{opt.family or 'both'} |"
        )
    lines = ["\n".join(rows), ""]
    for _, opt in registry():
        lines.append(f"- **`{opt.name}`**: {opt.help}")
    return "\n".join(lines) + "\n"


BEGIN, END = (
    "<!-- options table: generated from geoseg.inference.options by `make docs` -->\n",
    "<!-- end of options table -->",
)


def write_table(path: str) -> None:
    """Replace the option table of the Markdown file ``path`` (between its markers)."""
    from pathlib import Path

    text = Path(path).read_text()
    head, rest = text.split(BEGIN, 1)
    Path(path).write_text(head + BEGIN + markdown_table() + END + rest.split(END, 1)[1])


if __name__ == "__main__":  # make docs
    import sys

    write_table(sys.argv[1])
