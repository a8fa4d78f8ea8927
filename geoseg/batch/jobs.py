"""Job specs: the YAML files ``geoseg run`` executes (every key is in ``docs/jobs.md``; the
``tiling`` and ``predict`` keys are the options of :mod:`geoseg.inference.options`).

A job is read with ``yaml.SafeLoader`` (a tag that would build a Python object is refused) and
validated against :data:`SCHEMA` before anything is touched. Every error names the key, as a path
like ``inputs[1].asset``, and the line of the file it is on.

Relative paths in a job are relative to the folder the job file is in, so a job behaves the same
from any working directory (as under cron).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import GeosegError
from geoseg.inference.options import OptionError, PredictOptions, convert, hash_params, schema_node
from geoseg.inference.options import registry as options_registry
from geoseg.io.vectors import FORMATS
from geoseg.models.segmenter import FACTORY, builtin_model


class JobError(GeosegError):
    """A job spec is invalid: unknown or missing key, wrong type, nothing to do, bad model."""


# -- schema ------------------------------------------------------------------------------------
# A schema node is a type (str, int, float, bool), a tuple of allowed strings, ("list", node),
# ("map", {key: (node, required)}), ("dict",) for free-form mappings, or a one-of of maps.
_INT, _FLOAT, _STR, _BOOL = int, float, str, bool


def _option_sections() -> dict[str, dict]:
    """The ``tiling`` and ``predict`` maps of the schema, from the options registry."""
    sections: dict[str, dict] = {}
    for _, opt in options_registry():
        sections.setdefault(opt.section, {})[opt.name] = (schema_node(opt), False)
    return sections


_INPUT = (
    "map",
    {
        "glob": (("str|list", _STR), False),
        "list": (_STR, False),
        "stac": (_STR, False),
        "asset": (_STR, False),
        "bands": (("list", _INT), False),
        "crs": (_STR, False),
    },
)
SCHEMA = (
    "map",
    {
        "name": (_STR, True),
        "description": (_STR, False),
        "inputs": (("list", _INPUT), True),
        "model": (_STR, True),
        "model_args": (("dict",), False),
        # tiling.* and predict.*: the options of geoseg.inference.options (one key each)
        **{section: (("map", keys), False) for section, keys in _option_sections().items()},
        "outputs": (
            (
                "map",
                {
                    "dir": (_STR, True),
                    "scene_format": (tuple(FORMATS), False),
                    "mask": (("tif", "png", "npy", "nii", "nii.gz"), False),
                    "combined": (("gpkg", "parquet", "none"), False),
                    "report": (("bool|word", ("html",)), False),
                    "stac": (_BOOL, False),
                },
            ),
            True,
        ),
        "store": (_STR, False),
        "cluster": (
            (
                "map",
                {
                    "workers": (_INT, False),
                    "processes": (_BOOL, False),
                    "threads_per_worker": (_INT, False),
                    "scheduler": (_STR, False),
                },
            ),
            False,
        ),
    },
)
# keys every job must have
_TOP_REQUIRED = {"name", "inputs", "model", "outputs"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# -- the validated job -------------------------------------------------------------------------
@dataclass(frozen=True)
class InputSource:
    """One entry of ``inputs``: exactly one of glob / list / stac."""

    kind: str  # "glob" | "list" | "stac"
    value: tuple[str, ...]
    key: str  # its key path, for messages (``inputs[0]``)
    asset: str | None = None
    bands: tuple[int, ...] | None = None
    crs: str | None = None


@dataclass(frozen=True)
class Job:
    """A validated job spec with absolute paths."""

    path: str
    name: str
    inputs: tuple[InputSource, ...]
    model: str
    model_args: tuple[tuple[str, Any], ...] = ()
    options: PredictOptions = PredictOptions()  # its tiling.* and predict.* keys
    out_dir: str = ""
    scene_format: str = "geojson"
    mask: str | None = None  # semantic models: each scene's class mask as <scene>.mask.<ext>
    combined: str = "gpkg"
    report: str = "json"  # none | json (<name>.report.json and .txt) | html (those and .report.html)
    stac: bool = True  # a STAC Collection of the results: <out>/stac/collection.json
    store: str = ""
    workers: int = 1
    processes: bool = True
    threads_per_worker: int = 1
    scheduler: str | None = None

    @property
    def job_dir(self) -> str:
        """This job's own folder in the tile store: manifest, lock and per-tile results."""
        return os.path.join(self.store, self.name)

    def params_hash(self) -> str:
        """Hash of every setting that changes the objects found (not where they are written): the
        options whose ``Option.hash`` says so, and the model's arguments."""
        return hash_params(self.options, {"model_args": self.model_args})


def load_job(path: str | os.PathLike) -> Job:
    """Read and validate a job file; raise :class:`JobError` naming the key and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"job '{path}': no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"job '{path}': cannot read ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise JobError(
            f"job '{path}' line {line}: YAML tag {_tag_of(exc)} is not allowed (plain data only)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise JobError(f"job '{path}'{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise JobError(f"job '{path}': must be a mapping of keys (name, inputs, model, outputs...)")
    lines = _line_map(node)
    _check(data, SCHEMA, "", lines, path)
    for key in sorted(_TOP_REQUIRED - set(data)):
        raise JobError(f"job '{path}': missing required key '{key}'")
    return _build(data, path, lines)


def _tag_of(exc: yaml.constructor.ConstructorError) -> str:
    m = re.search(r"tag '([^']+)'", str(exc.problem))
    return f"'{m.group(1)}'" if m else "(a Python object)"


def _line_map(node: yaml.Node, prefix: str = "", out: dict | None = None) -> dict[str, int]:
    """Key path -> 1-based line, for messages."""
    out = {} if out is None else out
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}.{k.value}" if prefix else str(k.value)
            out[key] = k.start_mark.line + 1
            _line_map(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, f"{prefix}[{i}]", out)
    return out


def _where(path: Path, key: str, lines: dict[str, int]) -> str:
    line = lines.get(key)
    return f"job '{path}' line {line}: " if line else f"job '{path}': "


def _typename(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[t]


def _check(value: Any, schema, key: str, lines: dict, path: Path) -> None:
    where = _where(path, key, lines)
    if isinstance(schema, tuple) and schema and schema[0] == "map":
        if not isinstance(value, dict):
            raise JobError(f"{where}'{key}' must be a mapping")
        fields = schema[1]
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in fields:
                known = ", ".join(fields)
                raise JobError(f"{_where(path, sub, lines)}unknown key '{sub}' (known here: {known})")
            _check(v, fields[k][0], sub, lines, path)
        for k, (_, required) in fields.items():
            if required and key and k not in value:
                raise JobError(f"{where}'{key}' needs the key '{k}'")
        return
    if isinstance(schema, tuple) and schema and schema[0] == "list":
        if not isinstance(value, list) or not value:
            raise JobError(f"{where}'{key}' must be a non-empty list")
        for i, v in enumerate(value):
            _check(v, schema[1], f"{key}[{i}]", lines, path)
        return
    if isinstance(schema, tuple) and schema and schema[0] == "str|list":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise JobError(f"{where}'{key}' must be a string or a list of strings")
        return
    if isinstance(schema, tuple) and schema and schema[0] == "number|word":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and value > 0) and value not in schema[1]:
            raise JobError(
                f"{where}'{key}' must be a number > 0 or one of {', '.join(schema[1])} (got {value!r})"
            )
        return
    if isinstance(schema, tuple) and schema and schema[0] == "bool|word":
        if not isinstance(value, bool) and value not in schema[1]:
            raise JobError(f"{where}'{key}' must be true, false or {', '.join(schema[1])} (got {value!r})")
        return
    if isinstance(schema, tuple) and schema and schema[0] == "dict":
        if not isinstance(value, dict):
            raise JobError(f"{where}'{key}' must be a mapping")
        return
    if isinstance(schema, tuple):  # allowed strings
        if value not in schema:
            raise JobError(f"{where}'{key}' must be one of {', '.join(schema)} (got {value!r})")
        return
    ok = (
        isinstance(value, schema)
        and not (schema in (int, float) and isinstance(value, bool))
        or (schema is float and isinstance(value, int) and not isinstance(value, bool))
    )
    if not ok:
        raise JobError(f"{where}'{key}' must be {_typename(schema)} (got {value!r})")
    if schema is str and not value.strip():
        raise JobError(f"{where}'{key}' must not be empty")


def _build(data: dict, path: Path, lines: dict) -> Job:
    base = path.resolve().parent

    def absolute(p: str) -> str:
        p = os.path.expanduser(p)
        if "://" in p or p.startswith("/vsi"):
            return p
        return str((base / p).resolve()) if not os.path.isabs(p) else os.path.normpath(p)

    name = data["name"]
    if not _NAME.match(name):
        raise JobError(
            f"{_where(path, 'name', lines)}'name' must be letters, digits, '.', '_' or '-' "
            f"(it names folders; got {name!r})"
        )
    inputs = []
    for i, item in enumerate(data["inputs"]):
        key = f"inputs[{i}]"
        kinds = [k for k in ("glob", "list", "stac") if k in item]
        if len(kinds) != 1:
            raise JobError(f"{_where(path, key, lines)}'{key}' needs exactly one of glob, list, stac")
        kind = kinds[0]
        raw = item[kind] if isinstance(item[kind], list) else [item[kind]]
        if kind == "stac" and "asset" not in item:
            raise JobError(f"{_where(path, key, lines)}'{key}' reads STAC and needs the key 'asset'")
        if kind != "stac" and "asset" in item:
            raise JobError(f"{_where(path, key + '.asset', lines)}'{key}.asset' applies only to stac")
        bands = tuple(item["bands"]) if "bands" in item else None
        if bands and min(bands) < 1:
            raise JobError(f"{_where(path, key + '.bands', lines)}'{key}.bands' are 1-based")
        inputs.append(
            InputSource(kind, tuple(absolute(v) for v in raw), key, item.get("asset"), bands, item.get("crs"))
        )
    model = data["model"]
    if not FACTORY.match(model):
        model = builtin_model(model) or absolute(model)
        if not os.path.exists(model):
            raise JobError(f"{_where(path, 'model', lines)}'model': no such checkpoint '{model}'")
    tiling, predict = data.get("tiling", {}), data.get("predict", {})
    outputs, cluster = data["outputs"], data.get("cluster", {})
    for key, v, lo in (
        ("cluster.workers", cluster.get("workers"), 0),
        ("cluster.threads_per_worker", cluster.get("threads_per_worker"), 1),
    ):
        if v is not None and v < lo:
            raise JobError(f"{_where(path, key, lines)}'{key}' must be at least {lo} (got {v})")
    store = data.get("store") or os.environ.get("GEOSEG_STORE") or "tiles"
    changes = {}
    for f, opt in options_registry():
        section = tiling if opt.section == "tiling" else predict
        if opt.name in section:
            try:
                changes[f.name] = convert(opt.name, section[opt.name])
            except OptionError as exc:
                raise JobError(f"{_where(path, opt.key, lines)}'{opt.key}' {exc}") from None
    return Job(
        path=str(path.resolve()),
        name=name,
        inputs=tuple(inputs),
        model=model,
        model_args=tuple(sorted((data.get("model_args") or {}).items())),
        options=PredictOptions(**changes),
        out_dir=absolute(outputs["dir"]),
        scene_format=outputs.get("scene_format", "geojson"),
        mask=outputs.get("mask"),
        combined=outputs.get("combined", "gpkg"),
        report={True: "json", False: "none"}.get(outputs.get("report", True), outputs.get("report")),
        stac=outputs.get("stac", True),
        store=absolute(store) if "store" in data else os.path.abspath(store),
        workers=cluster.get("workers", 1),
        processes=cluster.get("processes", True),
        threads_per_worker=cluster.get("threads_per_worker", 1),
        scheduler=cluster.get("scheduler"),
    )


# -- scenes of a job ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenePlan:
    """One scene a job covers: where it is, what it is called in outputs, how to read it."""

    key: str  # unique, sanitised: names its outputs and its manifest record
    href: str
    source: str  # the input entry it came from (``inputs[0]``)
    item_id: str | None = None
    bands: tuple[int, ...] | None = None
    crs: str | None = None
    stac_fingerprint: str | None = None
    #: for a catalogued scene, the STAC document it came from (an item's own file, or the item
    #: collection holding it) and the item's datetime
    stac_href: str | None = None
    stac_datetime: str | None = None


def expand_inputs(job: Job) -> list[ScenePlan]:
    """Every scene of the job, in a stable order, with unique sanitised keys."""
    found: list[tuple] = []  # (name, href, key, id, stacfp, (stac href, datetime))
    for src in job.inputs:
        if src.kind == "glob":
            hits: list[str] = []
            for pattern in src.value:
                hits += sorted(p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p))
            if not hits:
                raise JobError(f"job '{job.path}': '{src.key}.glob' matches no file ({', '.join(src.value)})")
            found += [(Path(h).stem, h, src.key, None, None, (None, None)) for h in hits]
        elif src.kind == "list":
            for listing in src.value:
                found += [(Path(h).stem, h, src.key, None, None, (None, None))
                          for h in _read_list(listing, src, job)]  # fmt: skip
        else:
            for catalog in src.value:
                found += _stac_scenes(catalog, src, job)
    plans, seen = [], set()
    for name, href, key, item_id, stacfp, stac in found:
        if href in seen:
            continue
        seen.add(href)
        plans.append((sanitize(name), href, key, item_id, stacfp, stac))
    counts: dict[str, int] = {}
    for p in plans:
        counts[p[0]] = counts.get(p[0], 0) + 1
    out = []
    for name, href, key, item_id, stacfp, (stac_href, stac_datetime) in plans:
        if counts[name] > 1:  # two scenes with one name: tell them apart by where they are
            name = f"{name}-{hashlib.sha256(href.encode()).hexdigest()[:8]}"
        src = next(s for s in job.inputs if s.key == key)
        out.append(ScenePlan(name, href, key, item_id, src.bands, src.crs, stacfp, stac_href, stac_datetime))
    return out


def _read_list(listing: str, src: InputSource, job: Job) -> list[str]:
    try:
        text = Path(listing).read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError(
            f"job '{job.path}': '{src.key}.list' cannot read '{listing}' ({exc.strerror})"
        ) from None
    base = Path(listing).parent
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            remote = "://" in line or line.startswith("/vsi")
            paths.append(line if remote or os.path.isabs(line) else str((base / line).resolve()))
    if not paths:
        raise JobError(f"job '{job.path}': '{src.key}.list' file '{listing}' lists no scene")
    return paths


def _stac_scenes(catalog: str, src: InputSource, job: Job) -> list:
    import pystac

    try:
        with open(catalog, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise JobError(f"job '{job.path}': '{src.key}.stac' cannot read '{catalog}' ({exc})") from None
    try:
        if doc.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
            for item in items:  # resolve relative asset hrefs against the collection file
                item.set_self_href(None)
            base = Path(catalog).resolve().parent
        elif doc.get("type") == "Feature":
            items, base = [pystac.Item.from_file(catalog)], None
        else:
            cat = pystac.read_file(catalog)
            items, base = list(cat.get_items(recursive=True)), None
    except Exception as exc:  # pystac raises several kinds for malformed documents
        raise JobError(f"job '{job.path}': '{src.key}.stac' '{catalog}' is not valid STAC ({exc})") from None
    if not items:
        raise JobError(f"job '{job.path}': '{src.key}.stac' '{catalog}' has no items")
    scenes = []
    for item in items:
        asset = item.assets.get(src.asset)
        if asset is None:
            raise JobError(
                f"job '{job.path}': '{src.key}.asset' STAC item '{item.id}' has no asset '{src.asset}' "
                f"(it has: {', '.join(item.assets) or 'none'})"
            )
        href = asset.get_absolute_href() or asset.href
        if base is not None and not ("://" in href or os.path.isabs(href)):
            href = str((base / href).resolve())
        fp = json.dumps(
            {"id": item.id, "href": asset.href, "datetime": str(item.datetime),
             "updated": item.properties.get("updated"), "checksum": asset.extra_fields.get("file:checksum")},
            sort_keys=True,
        )  # fmt: skip
        source = str(Path(catalog).resolve()) if base is not None else item.get_self_href() or catalog
        when = item.datetime or item.common_metadata.start_datetime
        scenes.append((item.id, href, src.key, item.id, fp, (source, when.isoformat() if when else None)))
    return scenes


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(name: str) -> str:
    """A file name made of letters, digits, ``.``, ``_``, ``-``: never a path, never hidden.

    >>> sanitize("../../etc/passwd")
    'etc_passwd'
    >>> sanitize("/abs/path x")
    'abs_path_x'
    >>> sanitize("..")[:6]
    'scene-'
    """
    safe = _UNSAFE.sub("_", name).strip("._-")
    safe = re.sub(r"\.{2,}", ".", safe)
    if not safe:
        safe = "scene-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe[:120]


def inside(root: str, *parts: str) -> str:
    """``root/parts...``, refusing anything that would resolve outside ``root``."""
    root_abs = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_abs, *parts))
    if os.path.commonpath([root_abs, target]) != root_abs:
        raise JobError(f"output name {os.path.join(*parts)!r} would leave the output folder '{root}'")
    return target
