"""Planning a scene on the client: open its header (no pixels), choose bands, ground sample
distance and the tile grid, and describe the outputs: a :class:`SceneWork` that the engine runs.
A bad scene, model or setting fails here, before any task is submitted."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from geoseg.errors import ModelError, SceneError
from geoseg.inference.blend import BLENDS
from geoseg.inference.complete import MAX_PIXELS as COMPLETE_MAX_PIXELS
from geoseg.inference.complete import settings as completion_settings
from geoseg.inference.options import PredictOptions, conflicts
from geoseg.inference.tiling import Tile, TileGrid
from geoseg.io.masks import MaskWriter
from geoseg.io.refs import SceneRef, SliceRef
from geoseg.io.scene import Scene
from geoseg.io.slices import VOLUME_EXTENSIONS, SliceScene, extension, file_stem, is_slice_file, read_volume
from geoseg.models.segmenter import ModelSpec, Segmenter, default_batch_size, get_segmenter, model_metadata


class OptionConflict(ModelError):
    """An option the model's family does not take (``--gsd`` for a U-Net, ``--mask`` for a Mask
    R-CNN); ``flag`` names it as the command line spells it."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        super().__init__(message, flag)
        self.flag = flag

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Outputs:
    """Where a scene's results go. ``vectors`` None: nothing is written and the features come back
    in memory (``keep`` is then implied); ``scene_name`` replaces the ``scene`` column (a job names
    scenes after their STAC item)."""

    vectors: str | None = None
    fmt: str | None = None
    overwrite: bool = False
    layer: str | None = None
    scene_name: str | None = None
    keep: bool = False
    #: the scene's lon/lat outline comes back with its outcome (for a STAC Item), measured where
    #: the scene is reduced rather than by opening it again on the client
    footprint: bool = False


@dataclass
class SceneWork:
    """One prepared scene: everything its tasks need, picklable except ``sinks`` (local runs only)."""

    task: str  # "instance" | "semantic"
    model: ModelSpec
    opts: Any  # geoseg.inference.options.PredictOptions
    grid: TileGrid
    images: list[SceneRef]  # one per 2-D image: a raster, or the chosen slices of a stack/volume
    meta: dict  # crs, transform, name, path of the scene
    header: dict  # statistics known before any tile runs
    outputs: Outputs = field(default_factory=Outputs)
    pixel_space: bool = False
    cache: Any = None  # geoseg.inference.tilecache.TileCache: finished instance batches, for mid-scene resume
    blend: str = "gaussian"
    mask: Any = None  # geoseg.io.masks.MaskWriter of a semantic scene
    slice_indexes: list[int | None] = field(default_factory=list)  # per image: its slice (volumes)
    sinks: dict | None = None  # mask / erase / probabilities callbacks (in-process runs only)
    outlines: bool = True
    image_names: list[str] = field(default_factory=list)  # per image, for a volume's slices

    def batches(self) -> list[tuple[int, list[Tile]]]:
        """``(image, tiles)`` of every batch, image after image, tiles in row-major order."""
        tiles = self.grid.tiles()
        size = self.opts.batch_size
        return [(i, tiles[k : k + size]) for i in range(len(self.images)) for k in range(0, len(tiles), size)]

    def cleanup(self) -> None:
        """After a failure: remove what the scene had started to write."""
        if self.mask is not None:
            self.mask.abort()


def prepare(
    scene: str | SceneRef,
    model: ModelSpec | str,
    opts,
    outputs: Outputs = Outputs(),
    *,
    cache=None,
    mask_path: str | os.PathLike | None = None,
    sinks: dict | None = None,
    outlines: bool = True,
    local: bool = True,
) -> SceneWork:
    """Open ``scene``'s header and plan its work with ``model`` and ``opts`` (see the module
    docstring). A bad scene, model or setting raises here, before any task runs; an option of the
    other model family raises :class:`OptionConflict`. ``mask_path`` (the class mask), ``sinks``
    and ``outlines`` apply to semantic models; a mask asked of an instance model is an error.
    ``local``: the model also runs in this process (not only on a cluster's workers)."""
    ref = scene if isinstance(scene, SceneRef) else SceneRef(str(scene))
    model = model if isinstance(model, ModelSpec) else ModelSpec.resolve(str(model))
    if opts.batch_size is None:
        opts = replace(opts, batch_size=default_batch_size(opts.device))
    opened = _open_header(ref, opts.slice_axis, opts.hu_window)  # a bad scene fails before a model loads
    try:
        # the client reads the model's settings; on a cluster the workers run it (on their devices)
        seg = get_segmenter(model, opts.device if local else "cpu")
        if seg.task == "instance" and mask_path is not None:
            raise OptionConflict(
                f"model '{model.name}': masks are written for semantic models only", "--mask"
            )
        conflict = conflicts(opts, seg.task)
        if conflict is not None:
            raise OptionConflict(f"model '{model.name}': {conflict[1]}", conflict[0].flag.split("/")[0])
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if seg.task == "semantic":
        if opened is not None:
            opened.close()  # semantic planning opens each image as it chooses it
        return _prepare_semantic(ref, model, seg, opts, outputs, opts.blend, mask_path, opts.slice_axis,
                                 opts.slices, opts.hu_window, sinks, outlines)  # fmt: skip
    return _prepare_instance(ref, model, seg, opts, outputs, cache, opened)


def _open_header(ref: SceneRef, axis, hu_window):
    """Open ``ref`` (a bad scene fails here, before a model is loaded): the open scene, or None for
    a stack or volume, whose slices are opened one by one later."""

    if is_slice_file(ref.path) and not isinstance(ref, SliceRef):
        SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window).close()
        return None
    return ref.open()


def _prepare_instance(ref, model, seg, opts, outputs, cache, first=None) -> SceneWork:

    first, asked = first if first is not None else ref.open(warn=False), ref
    try:
        ref = trained_bands(ref, seg, first.count)
        ref = resolve_gsd(ref, seg, opts, first.native_gsd)
        if opts.rotated_view is not None and getattr(seg, "rotated_view", None) is None:
            raise ModelError(f"model '{model.name}': has no rotated view (a Mask R-CNN checkpoint has)")
        same = ref == asked  # other bands or another grid: open it again as chosen
    except BaseException:
        first.close()
        raise
    with first if same else _closing_then_open(first, ref) as sc:
        check_bands(sc, seg, model)
        grid = make_grid(sc, seg, opts)
        if opts.edge_margin is None:
            opts = replace(opts, edge_margin=max(4, grid.overlap // 4))
        meta = {"crs": sc.crs, "transform": sc.transform, "name": sc.name, "path": sc.path}
        gsd = {"native_gsd_m": sc.native_gsd, "gsd_m": sc.gsd if sc.gsd is not None else sc.native_gsd}
        pixel_space = bool(getattr(sc, "pixel_space", False))
        ref = sc.ref
        offset = radiometric_offset(sc, seg, opts) if ref.offset is None else None
        if offset is not None:
            ref = replace(ref, offset=offset)
    header = {
        "scene": meta["path"], "width": grid.width, "height": grid.height, "tile_size": grid.size,
        "overlap": grid.overlap, **{k: round(v, 4) if v is not None else None for k, v in gsd.items()},
        "tiles": len(grid.tiles()), "pixel_space": pixel_space,
    }  # fmt: skip
    if offset is not None:
        header["radiometric_offset"] = [round(v, 2) for v in offset]
    return SceneWork("instance", model, opts, grid, [ref], meta, header, outputs, pixel_space, cache,
                     slice_indexes=[None])  # fmt: skip


def _closing_then_open(first, ref: SceneRef):
    """``ref`` opened anew (other bands or grid than ``first``, which is closed)."""
    first.close()
    return ref.open(warn=False)


def trained_bands(ref: SceneRef, seg, count: int) -> SceneRef:
    """A checkpoint knows its bands: read them unless told otherwise."""
    trained = model_metadata(seg).get("bands")
    if ref.bands is None and trained and len(trained) == seg.in_channels:
        if count != seg.in_channels and max(trained) <= count:
            return replace(ref, bands=tuple(trained))
    return ref


def _prepare_semantic(ref, model, seg, opts, outputs, blend, mask_path, axis, slices, hu_window, sinks,
                      outlines) -> SceneWork:  # fmt: skip

    if blend not in BLENDS:
        raise ModelError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    volume, nifti, indexes = False, None, [None]
    if is_slice_file(ref.path) and not isinstance(ref, SliceRef):
        with SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window) as first:
            count = first.slices
        nifti = read_volume(ref.path) if extension(ref.path) in VOLUME_EXTENSIONS else None
        volume = nifti is not None or count > 1
        chosen = list(range(count)) if slices is None else sorted(set(slices))
        bad = [k for k in chosen if not 0 <= k < count]
        if bad:
            raise SceneError(f"scene '{ref.path}': slice {bad[0]} does not exist (it has {count})")
        if volume:
            indexes = chosen
        images = [SliceRef(ref.path, ref.bands, index=k, axis=axis, hu_window=hu_window) for k in indexes]
    else:
        images = [ref]
    spacing = resolve_spacing(seg, opts)
    air = air_reference(seg, opts)
    if (spacing is not None or air is not None) and is_slice_file(ref.path):
        images = [  # seen at the model's pixel spacing, calibrated by the air as its training slices
            replace(im, spacing=spacing, air=air) if isinstance(im, SliceRef)
            else SliceRef(im.path, im.bands, axis=axis, hu_window=hu_window, spacing=spacing, air=air)
            for im in images
        ]  # fmt: skip
    with images[0].open(warn=False) as sc:
        refined = trained_bands(images[0], seg, sc.count)
    images = [replace(im, bands=refined.bands) for im in images]
    with images[0].open(warn=False) as sc:
        check_bands(sc, seg, model)
        grid = make_grid(sc, seg, opts)
        if (
            opts.complete
            and completion_settings(model_metadata(seg), list(seg.classes))
            and (grid.width * grid.height > COMPLETE_MAX_PIXELS)
        ):
            raise SceneError(
                f"scene '{ref.path}': {grid.width} x {grid.height} is too large for region completion "
                f"(the model's complete setting reads whole images; use --no-complete)"
            )
        meta = {"crs": sc.crs, "transform": sc.transform, "name": sc.name, "path": sc.path}
        pixel_space = bool(getattr(sc, "pixel_space", False))
        crs, transform, height, width = sc.crs, sc.transform, sc.height, sc.width
        plane, native = None, getattr(sc, "native_spacing", None)
        air_shift = getattr(sc, "air_shift", None)
        if getattr(sc, "input_shape", (height, width)) != (height, width):  # resampled: masks come back
            plane, (height, width), transform = (height, width), sc.input_shape, None
        images[0] = sc.ref if not volume else images[0]
    names = []
    if volume:
        names = [f"{file_stem(ref.path)}_{int(k):04d}" for k in indexes]
        meta["path"] = ref.path
    writer = None
    if mask_path is not None:
        if volume:
            shape = tuple(nifti.shape[:3]) if nifti is not None else (count, height, width)
            vol_axis = (2 if axis is None else axis) if nifti is not None else 0
            writer = MaskWriter(mask_path, shape, axis=vol_axis, nifti=nifti, overwrite=outputs.overwrite,
                                plane=plane)  # fmt: skip
        else:
            writer = MaskWriter(mask_path, (height, width), crs=crs, transform=transform,
                                overwrite=outputs.overwrite, plane=plane)  # fmt: skip
    header = {
        "scene": ref.path, "width": grid.width, "height": grid.height, "tile_size": grid.size,
        "overlap": grid.overlap, "stride": grid.align, "blend": blend,
        "tiles": len(grid.tiles()) * len(images), "pixel_space": pixel_space,
        "mask": None if mask_path is None else str(mask_path),
    }  # fmt: skip
    if plane is not None:
        header.update(native_spacing_mm=list(native), spacing_mm=list(spacing))
    if air_shift is not None and not volume:  # a volume's slices are calibrated one by one
        header["air_offset"] = [round(v, 2) for v in air_shift]
    if volume:
        header.update(slices=len(images), volume=True)
    return SceneWork("semantic", model, opts, grid, images, meta, header, outputs, pixel_space, None, blend,
                     writer, indexes, sinks, outlines, names)  # fmt: skip


def radiometric_offset(scene: Scene, seg: Segmenter, opts: PredictOptions) -> tuple[float, ...] | None:
    """What each band of ``scene`` gets added so that its median meets the checkpoint's
    ``radiometry`` (``{"statistic": "median", "reference": [per band]}``: the training scenes' median
    of :meth:`~geoseg.io.scene.Scene.band_medians`); None where the checkpoint records none, for
    ``opts.match_radiometry`` False, or where a band has no data in the sample."""
    record = model_metadata(seg).get("radiometry")
    if not (opts.match_radiometry and record and isinstance(scene, Scene)):
        return None
    reference = np.asarray(record["reference"], float)
    if record.get("statistic", "median") != "median" or len(reference) != scene.count:
        raise ModelError(
            f"checkpoint radiometry: needs the median of each of its {scene.count} band(s), got {record}"
        )
    shift = reference - scene.band_medians()
    return tuple(float(v) for v in shift) if np.isfinite(shift).all() else None


def air_reference(seg: Segmenter, opts: PredictOptions) -> float | None:
    """The HU that the air outside the body is calibrated to before a slice reaches the model: the
    checkpoint's ``radiometry`` where it is ``{"statistic": "air", "reference": [HU]}`` (its
    training slices were calibrated so, see :func:`~geoseg.io.slices.air_offset`); None for other
    checkpoints or ``opts.match_radiometry`` False."""
    record = model_metadata(seg).get("radiometry")
    if not (opts.match_radiometry and record and record.get("statistic") == "air"):
        return None
    reference = record.get("reference")
    reference = reference if isinstance(reference, list | tuple) else [reference]
    if len(reference) != 1 or not isinstance(reference[0], int | float):
        raise ModelError(f"checkpoint radiometry: the air statistic takes one value (HU), got {record}")
    return float(reference[0])


def resolve_spacing(seg: Segmenter, opts: PredictOptions) -> tuple[float, float] | None:
    """The pixel spacing (mm, rows and columns) slices are seen at: ``opts.spacing``, else the
    checkpoint's ``spacing_mm`` (a number or a pair); None (``native``, or neither) keeps each slice's
    own grid."""
    if opts.spacing == 0:
        return None
    value = opts.spacing if opts.spacing is not None else model_metadata(seg).get("spacing_mm")
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int | float) else tuple(value)
    return (float(pair[0]), float(pair[1]))


def resolve_gsd(ref: SceneRef, seg: Segmenter, opts: PredictOptions, native: float | None) -> SceneRef:
    """The scene as an instance model should see it (semantic masks keep the scene's grid, see
    :func:`~geoseg.inference.options.conflicts`): resampled to ``opts.gsd``; by default (None) to the
    checkpoint's ``max_gsd`` when the scene (``native`` metres per pixel) is coarser than that (a
    finer scene is read as it is); ``opts.gsd == 0`` keeps the scene's own grid."""
    if opts.gsd == 0:
        return replace(ref, gsd=None)
    if opts.gsd is not None:
        return replace(ref, gsd=float(opts.gsd))
    ceiling = model_metadata(seg).get("max_gsd")
    if not ceiling:
        return ref
    if native is None or native <= float(ceiling) * 1.01:  # within 1 %: the same grid
        return ref
    return replace(ref, gsd=float(ceiling))


def check_bands(scene: Scene, seg: Segmenter, model: ModelSpec) -> None:
    if scene.count != seg.in_channels:
        raise ModelError(
            f"scene '{scene.path}': {scene.count} band(s) selected but model '{model.name}' "
            f"expects {seg.in_channels} (choose bands with --bands)"
        )


def make_grid(scene: Scene, seg: Segmenter, opts: PredictOptions) -> TileGrid:
    size = opts.tile_size or getattr(seg, "tile_size", None) or 512
    overlap = opts.overlap if opts.overlap is not None else getattr(seg, "overlap", None)
    overlap = 64 if overlap is None else overlap
    stride = int(getattr(seg, "stride", 1) or 1)
    try:
        return TileGrid(
            scene.height, scene.width, size=size, overlap=overlap, transform=scene.transform,
            align=stride,
        )  # fmt: skip
    except ValueError as exc:
        raise ModelError(f"tiling of '{scene.path}': {exc}") from exc


def open_check(ref: SceneRef, *, axis: int | None = None, hu_window=None) -> bool:
    """Open ``ref`` once (a bad input fails here, before a model is loaded); True when the scene is
    in pixel space (a slice, or an image without any georeferencing)."""
    if is_slice_file(ref.path):
        SliceScene(ref.path, bands=ref.bands, index=0, axis=axis, hu_window=hu_window).close()
        return True
    with ref.open() as sc:
        return bool(getattr(sc, "pixel_space", False))
