"""geoseg's Python API: :func:`predict`, :func:`open_scene`, :func:`load_model` and :func:`evaluate`.

>>> import geoseg
>>> result = geoseg.predict("scene.tif", "tankers-light")  # doctest: +SKIP
>>> result.features.head()                                 # doctest: +SKIP
>>> result.write("tankers.gpkg")                           # doctest: +SKIP

The command line is a shell over these functions: ``geoseg predict`` is :func:`predict` and
:meth:`Result.write`, ``geoseg eval`` is :func:`evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import geopandas as gpd

from geoseg.errors import ModelError
from geoseg.inference import options as registry
from geoseg.inference.engine import run_scene
from geoseg.inference.options import OptionError, PredictOptions
from geoseg.inference.plan import Outputs
from geoseg.io.refs import SceneRef, open_scene
from geoseg.io.vectors import write_features
from geoseg.models.segmenter import ModelSpec, Segmenter, load_model

__all__ = ["Result", "evaluate", "info", "load_model", "open_scene", "predict"]


@dataclass
class Result:
    """What :func:`predict` returns.

    ``features``: the objects (instance models) or class regions (semantic models) as a
    GeoDataFrame: in the scene's CRS for a georeferenced scene, in pixel coordinates (column, row)
    for a slice; ``stats``: the run's statistics (tiles run and skipped, objects, seconds, grid,
    ground sample distance...); ``mask``: the class mask's path when one was asked for;
    ``output``: the vector file written during the run, if any.
    """

    features: gpd.GeoDataFrame
    stats: dict
    mask: str | None = None
    output: str | None = None

    @property
    def pixel_space(self) -> bool:
        """True when the features are in pixel coordinates (a slice, or an image without a CRS)."""
        return bool(self.stats.get("pixel_space"))

    def write(self, path: str | os.PathLike, format: str | None = None, overwrite: bool = False) -> str:
        """Write the features to ``path`` (GeoJSON, GeoPackage, FlatGeobuf or GeoParquet, from the
        extension unless ``format`` says), atomically; returns the path. GeoJSON is RFC 7946
        (lon/lat) for georeferenced scenes and pixel coordinates for slices."""
        path = str(path)
        write_features(self.features, path, fmt=format, overwrite=overwrite, pixel_space=self.pixel_space)
        return path

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"Result({len(self.features)} features from {s.get('tiles_run', 0)} tiles of "
            f"{s.get('scene')!r}{f', mask={self.mask!r}' if self.mask else ''})"
        )


def predict(
    source: str | os.PathLike | SceneRef | Any,
    model: str | os.PathLike | ModelSpec | Segmenter,
    *,
    mask: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    format: str | None = None,
    overwrite: bool = False,
    bands: tuple[int, ...] | list[int] | None = None,
    crs: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    workers: int = 1,
    options: PredictOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    scheduler=None,
    **settings: Any,
) -> Result:
    """Segment a whole scene tile by tile, with either model family, and return its objects.

    Parameters
    ----------
    source
        A raster path or URI (GeoTIFF, COG, ``/vsis3/...``), a slice (``.npy``, ``.dcm``, ``.png``),
        a stack or volume (``.npy``, ``.nii.gz``), a :class:`~geoseg.io.refs.SceneRef`, or a scene
        opened with :func:`open_scene`.
    model
        A checkpoint path (``.safetensors``), the name of a model shipped with geoseg
        (``"tankers-light"``, ``"lungs-unet"``), a ``"package.module:factory"`` string (with
        ``model_args`` as its keywords), or a segmenter object already in memory (anything that
        follows :mod:`geoseg.models.segmenter`'s contract).
    mask
        Semantic models: also write the class mask here (``.tif`` for rasters: a tiled GeoTIFF
        with the scene's CRS; ``.png``/``.npy`` for slices; ``.nii.gz``/``.npy`` for volumes).
    output, format, overwrite
        Also write the features to ``output`` while the run finishes (as :meth:`Result.write`).
    bands, crs
        1-based bands to read (default: the checkpoint's), a CRS for a scene that has none.
    workers
        Threads of this process running the model at once (a ``scheduler`` has its own workers).
    options
        A :class:`~geoseg.inference.options.PredictOptions`; keyword ``settings`` go on top.
    progress
        ``progress(done, total)`` as batches finish.
    scheduler
        A ``dask.distributed.Client`` to run on; None runs in this process. A segmenter object
        travels to the workers pickled, so prefer a checkpoint path or factory on a cluster.
    settings
        Any option of :class:`~geoseg.inference.options.PredictOptions` by name, as on the
        command line: ``tile_size``, ``overlap``, ``batch_size``, ``score_threshold``,
        ``mask_threshold``, ``min_area``, ``any_size``, ``gsd`` (metres or ``"native"``),
        ``rotated_view``, ``blend``, ``slices``, ``slice_axis``, ``hu_window``, ``device``. See
        ``docs/options.md``.
    """
    opts = _options(options, settings, workers)
    ref = _scene_ref(source, bands, crs)
    spec = _model_spec(model, model_args)
    outputs = Outputs(
        vectors=None if output is None else str(output), fmt=format, overwrite=overwrite, keep=True
    )
    outcome = run_scene(ref, spec, opts, outputs, progress=progress, scheduler=scheduler,
                        mask_path=None if mask is None else str(mask))  # fmt: skip
    return Result(outcome.features, outcome.stats, None if mask is None else str(mask),
                  None if output is None else str(output))  # fmt: skip


def _options(options: PredictOptions | None, settings: Mapping[str, Any], workers: int) -> PredictOptions:
    base = options or PredictOptions()
    try:
        opts = registry.from_spelled(settings, base)
    except KeyError as exc:
        known = ", ".join(opt.name for _, opt in registry.registry())
        raise TypeError(f"predict() got an unknown option {exc.args[0]!r} (options: {known})") from None
    except OptionError as exc:
        raise ValueError(str(exc)) from None
    return replace(opts, workers=max(1, int(workers)))


def _scene_ref(source, bands, crs) -> SceneRef:
    if isinstance(source, SceneRef):
        ref = source
    elif isinstance(getattr(source, "ref", None), SceneRef):  # an open scene
        ref = source.ref
    elif isinstance(source, str | os.PathLike):
        ref = SceneRef(os.fspath(source))
    else:
        raise TypeError(
            f"source must be a path, a URI, a SceneRef or an open scene, not {type(source).__name__}"
        )
    if bands is not None or crs is not None:
        ref = replace(ref, bands=tuple(int(b) for b in bands) if bands else ref.bands, crs=crs or ref.crs)
    return ref


def _model_spec(model, model_args: Mapping[str, Any] | None) -> ModelSpec:
    args = tuple(sorted((model_args or {}).items()))
    if isinstance(model, ModelSpec):
        return replace(model, options=args) if args else model
    if isinstance(model, str | os.PathLike):
        return ModelSpec.resolve(os.fspath(model), args)
    if args:
        raise ModelError("model_args apply to module:factory models, not to a segmenter object")
    return ModelSpec.of(model)


def evaluate(
    prediction,
    truth,
    *,
    iou_threshold: float = 0.5,
    slice_axis: int = 2,
    worst: int = 5,
) -> dict:
    """Score a prediction against the truth and return the report (a dict).

    Objects (a vector file, a GeoDataFrame or a :class:`Result`): one-to-one matches at
    ``iou_threshold``; precision, recall, F1, duplicates, seam splits and attribute errors (see
    :mod:`geoseg.evaluation.objects`). Masks (mask files or folders of them, NIfTI volumes):
    per-slice Dice and IoU with an empty truth scoring 1.0 against an empty prediction and 0.0
    against any predicted pixel (see :mod:`geoseg.evaluation.masks`).
    """
    from geoseg.evaluation.masks import evaluate_masks, is_mask_input
    from geoseg.evaluation.objects import evaluate as evaluate_objects
    from geoseg.evaluation.objects import read_vectors

    def frame(x, role: str) -> gpd.GeoDataFrame:
        if isinstance(x, Result):
            return x.features
        if isinstance(x, gpd.GeoDataFrame):
            return x
        return read_vectors(x, role)

    paths = [x for x in (prediction, truth) if isinstance(x, str | os.PathLike)]
    if paths and len(paths) == 2 and any(is_mask_input(p) for p in paths):
        return evaluate_masks(prediction, truth, axis=slice_axis, worst=worst)
    report = evaluate_objects(
        frame(prediction, "prediction"), frame(truth, "truth"), iou_threshold=iou_threshold
    )
    for role, x in (("prediction", prediction), ("truth", truth)):
        if isinstance(x, str | os.PathLike):
            report[role] = os.fspath(x)
    return report


def info(target: str | os.PathLike, *, model: str = "tankers-light") -> dict:
    """What ``geoseg info`` shows, as a dict: a model's card (a checkpoint path or shipped name,
    read from its metadata without building it; a ``module:factory`` is built) or a scene's
    summary, with the tiles it makes at ``model``'s tile size and overlap (and at its ``max_gsd``
    where a coarser scene would be resampled)."""
    from geoseg.models.checkpoint import read_metadata
    from geoseg.models.segmenter import FACTORY, builtin_model

    text = os.fspath(target)
    if FACTORY.match(text) and not os.path.exists(text):
        seg = load_model(text, device="cpu")
        return {
            "kind": "model",
            "model": text,
            "task": seg.task,
            "classes": list(seg.classes),
            "in_channels": seg.in_channels,
            "tile_size": getattr(seg, "tile_size", None),
            "overlap": getattr(seg, "overlap", None),
            "measures": list(getattr(seg, "measures", ())),
        }
    path = builtin_model(text) or text
    if path.endswith(".safetensors"):
        meta = read_metadata(path)
        spec = ModelSpec(path)
        return {
            "kind": "model",
            "model": spec.name,
            "path": path,
            "size_mb": round(os.path.getsize(path) / 1e6, 2),
            "model_hash": spec.key,
            **meta,
        }
    return _scene_info(text, model)


def _scene_info(path: str, model: str) -> dict:
    from geoseg.inference.tiling import TileGrid
    from geoseg.io.slices import SliceScene, is_slice_file
    from geoseg.models.checkpoint import read_metadata
    from geoseg.models.segmenter import builtin_model

    # a stack or volume: its first slice says the size
    opened = SliceScene(path, index=0) if is_slice_file(path) else open_scene(path)
    with opened as scene:
        if isinstance(scene, SliceScene):
            out = {
                "kind": "slice",
                "path": path,
                "width": scene.width,
                "height": scene.height,
                "bands": scene.count,
                "slices": scene.slices,
                "pixel_space": True,
            }
        else:
            out = {"kind": "raster", **scene.describe()}
    ckpt = builtin_model(model) or model
    meta = read_metadata(ckpt) if ckpt.endswith(".safetensors") and os.path.exists(ckpt) else {}
    size, overlap = meta.get("tile_size") or 512, meta.get("overlap")
    overlap = 64 if overlap is None else overlap
    grid = TileGrid(out["height"], out["width"], size=size, overlap=overlap)
    tiles = {"model": os.path.basename(ckpt), "tile_size": size, "overlap": overlap, "tiles": len(grid)}
    ceiling, native = meta.get("max_gsd"), out.get("gsd_m")
    if ceiling and native and native > float(ceiling) * 1.01:
        w, h = round(out["width"] * native / ceiling), round(out["height"] * native / ceiling)
        tiles.update(read_at_gsd_m=float(ceiling), tiles=len(TileGrid(h, w, size=size, overlap=overlap)))
    out["at_model"] = tiles
    return out
