"""The HTML report: one self-contained page of a run's (or a prediction's) scenes and objects.

Each scene becomes a panel: a picture made from the scene's overviews (:meth:`Scene.overview`,
never a read of the whole scene), its objects as outlines in that picture's pixels, its truth
outlines and scores when a truth is given, and for semantic results the class mask drawn over the
image (from the mask's own overviews) with the Dice of each slice. The page (``report.html``
beside this module) draws them on a canvas with pan and zoom, lists every object in a paged,
sortable table, and works offline: everything is inlined, its Content-Security-Policy forbids any
request, and it uses no JavaScript library.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np

from geoseg.clock import utc_now
from geoseg.errors import GeosegError, one_line
from geoseg.io.atomic import check_writable, write_text_atomic

#: object columns the table shows, in order (those a layer has)
COLUMNS = ("id", "class", "score", "length_m", "beam_m", "heading_deg", "area_m2")
#: class colours of mask overlays (class 1, 2, ...), RGB
PALETTE = ((255, 212, 0), (0, 200, 255), (255, 120, 0), (120, 255, 80), (255, 80, 200), (160, 120, 255))
#: mask files the report draws (volumes are scored, not drawn)
DRAWN_MASKS = (".tif", ".tiff", ".png", ".npy")


class ReportError(GeosegError):
    """A report cannot be made: an input is missing or unreadable, or the output cannot be written."""


@dataclass
class SceneEntry:
    """One scene of a report: where its image and results are, and how it went."""

    name: str
    result: str = "done"  # done | skipped | failed
    image: str | None = None  # the scene raster or slice (path or URI)
    vectors: str | None = None  # its objects (GeoJSON, GeoPackage, ...)
    mask: str | None = None  # a semantic result's class mask
    truth: str | None = None  # true objects (vector file) or a true mask
    bands: tuple[int, ...] | None = None
    crs: str | None = None
    error: str | None = None
    stats: dict = field(default_factory=dict)  # objects, tiles_run, seconds, tiles_per_second, reason


# -- pictures ----------------------------------------------------------------------------------
def _stretch(data: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` float with NaN -> ``(h, w, 3)`` uint8 stretched between each band's 2nd and
    98th percentile; pixels with NaN in any band are black."""
    bands = data[:3] if data.shape[0] >= 3 else data[:1].repeat(3, axis=0)
    valid = np.all(np.isfinite(bands), axis=0)
    out = np.zeros(bands.shape[1:] + (3,), np.uint8)
    for i, band in enumerate(bands):
        v = band[valid]
        if v.size == 0:
            continue
        lo, hi = np.percentile(v, (2, 98))
        if hi <= lo:
            lo, hi = float(v.min()), float(v.max()) if v.max() > v.min() else float(v.min()) + 1
        out[..., i] = np.clip((np.nan_to_num(band, nan=lo) - lo) * (255.0 / (hi - lo)), 0, 255).astype(
            np.uint8
        )
    out[~valid] = 0
    return out


def _data_uri(rgb: np.ndarray, fmt: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb).save(buf, "JPEG", quality=85, optimize=True)
    else:
        Image.fromarray(rgb).save(buf, "PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _scene_picture(entry: SceneEntry, max_side: int):
    """(picture or None, transform picture px -> scene coordinates, scene CRS, pixel_space, size,
    note)."""
    from affine import Affine

    from geoseg.io.slices import extension, read_image

    if extension(entry.image) in (".dcm", ".npy", ".nii", ".nii.gz"):  # a slice: small, read whole
        arr = read_image(entry.image)  # (C, H, W)
        factor = max(1, int(np.ceil(max(arr.shape[1:]) / max_side)))
        h, w = arr.shape[1:]
        return arr[:, ::factor, ::factor], Affine.scale(factor), None, True, (w, h), "full resolution"
    from geoseg.io.scene import Scene

    with Scene(entry.image, bands=entry.bands, crs=entry.crs, warn=False) as scene:
        data, transform, note = scene.overview(max_side)
        return data, transform, scene.crs, scene.pixel_space, (scene.width, scene.height), note


def _mask_picture(path: str, shape: tuple[int, int]) -> np.ndarray | None:
    """A class mask at ``shape`` (nearest), from its overviews where it has them."""
    from geoseg.io.slices import extension, read_mask, resize_labels

    ext = extension(path)
    if ext in (".tif", ".tiff"):
        from geoseg.io.scene import Scene

        with Scene(path, warn=False) as m:
            data, _, _ = m.overview(max(shape), resampling="nearest")
        if data is None:
            return None
        labels = np.nan_to_num(data[0]).astype(np.int32)
    elif ext in (".png", ".npy"):
        labels = np.asarray(read_mask(path)).astype(np.int32)
        if labels.ndim != 2:
            return None
    else:
        return None
    labels = resize_labels(labels, shape)
    rgba = np.zeros(shape + (4,), np.uint8)
    for c in np.unique(labels):
        if c <= 0:
            continue
        rgba[labels == c] = (*PALETTE[(c - 1) % len(PALETTE)], 110)
    return rgba


# -- outlines ----------------------------------------------------------------------------------
def _outlines(gdf, transform, crs, pixel_space: bool) -> list[list[list[float]]]:
    """Each geometry as polygons of rings of flat ``x0, y0, x1, y1, ...`` picture pixels."""
    import shapely

    if len(gdf) == 0:
        return []
    if not pixel_space and crs is not None and gdf.crs is not None:
        gdf = gdf.to_crs(crs)
    inverse = ~transform
    geoms = shapely.transform(gdf.geometry.values, lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1])))
    geoms = shapely.simplify(geoms, 0.2, preserve_topology=True)
    out = []
    for g in geoms:
        polys = []
        for part in getattr(g, "geoms", [g]):
            if part is None or part.is_empty or part.geom_type != "Polygon":
                continue
            rings = [part.exterior, *part.interiors]
            polys.append([np.round(np.asarray(r.coords)[:, :2], 1).ravel().tolist() for r in rings])
        out.append(polys)
    return out


def _cell(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return round(value, 4) if isinstance(value, float) else value


def _read_objects(path: str):
    from geoseg.io.vectors import read_layer

    try:
        return read_layer(path)
    except Exception as exc:  # pyogrio raises several kinds for unreadable files
        raise ReportError(f"objects '{path}': cannot be read ({one_line(exc)})") from exc


def scene_panel(entry: SceneEntry, *, max_side: int = 1280) -> dict:
    """What the page shows of one scene, as JSON-ready values."""
    panel = {
        "name": entry.name,
        "result": entry.result,
        "error": entry.error,
        "stats": entry.stats,
        "image": None,
        "overlay": None,
        "note": None,
        "objects": [],
        "truth": [],
        "evaluation": None,
        "columns": [],
    }
    if entry.result == "failed" or entry.image is None:
        return panel
    picture, transform, crs, pixel_space, (width, height), note = _scene_picture(entry, max_side)
    panel.update(width=width, height=height, note=note)
    if picture is not None:
        rgb = _stretch(picture)
        panel["image"] = _data_uri(rgb, "JPEG")
        panel["size"] = [rgb.shape[1], rgb.shape[0]]
    else:  # no picture: the objects are drawn at the size a picture would have
        panel["size"] = [max(1, round(width / transform.a)), max(1, round(height / abs(transform.e)))]
    if entry.mask:
        overlay = _mask_picture(entry.mask, (panel["size"][1], panel["size"][0]))
        if overlay is not None:
            panel["overlay"] = _data_uri(overlay, "PNG")
    gdf = _read_objects(entry.vectors) if entry.vectors else None
    if gdf is not None:
        columns = [c for c in COLUMNS if c in gdf.columns]
        panel["columns"] = columns
        shapes = _outlines(gdf, transform, crs, pixel_space)
        panel["objects"] = [
            {"values": [_cell(row[c]) for c in columns], "shape": shape}
            for (_, row), shape in zip(gdf.iterrows(), shapes, strict=True)
        ]
    if entry.truth:
        panel["evaluation"], panel["truth"] = _evaluate(entry, gdf, transform, crs, pixel_space)
    return panel


def _evaluate(entry: SceneEntry, objects, transform, crs, pixel_space):
    """Scores against the truth, and the truth's outlines (objects; none for masks)."""
    from geoseg.evaluation.masks import evaluate_masks, is_mask_input

    if entry.mask and is_mask_input(entry.truth):
        r = evaluate_masks(entry.mask, entry.truth)
        slices = [{"id": s["id"], "dice": s["dice"]} for s in r["per_slice"]]
        return {"kind": "masks", "mean_dice": r["mean_dice"], "min_dice": r["min_dice"], "slices": slices}, []
    if objects is None:
        return None, []
    from geoseg.evaluation.objects import evaluate

    truth = _read_objects(entry.truth)
    r = evaluate(objects, truth)
    keep = ("precision", "recall", "f1", "true_positives", "false_positives", "false_negatives", "mean_iou",
            "duplicates", "seam_splits", "parts")  # fmt: skip
    return {"kind": "objects", **{k: r[k] for k in keep if k in r}}, _outlines(
        truth, transform, crs, pixel_space
    )


# -- the page ----------------------------------------------------------------------------------
def build_report(
    entries: list[SceneEntry], *, title: str, summary: dict | None = None, max_side: int = 1280
) -> str:
    """The report's HTML (one string, everything inlined)."""
    from geoseg import __version__

    scenes = []
    for e in entries:
        try:
            scenes.append(scene_panel(e, max_side=max_side))
        except GeosegError as exc:  # one unreadable scene is shown as such, not the end of the report
            scenes.append(
                {
                    **scene_panel(SceneEntry(e.name, "failed", error=one_line(exc))),
                    "result": e.result,
                    "stats": e.stats,
                }
            )
    data = {
        "title": title,
        "generated": utc_now(),
        "geoseg": __version__,
        "summary": summary or {},
        "scenes": scenes,
    }
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # inert in <script>
    page = files("geoseg.report").joinpath("report.html").read_text(encoding="utf-8")
    return page.replace("__TITLE__", html.escape(title)).replace("__DATA__", text)


def write_report(
    path: str | os.PathLike,
    entries: list[SceneEntry],
    *,
    title: str,
    summary: dict | None = None,
    max_side: int = 1280,
    overwrite: bool = True,
) -> str:
    """Write the report to ``path`` atomically; returns the path."""
    path = os.fspath(path)
    check_writable(path, overwrite=overwrite)
    write_text_atomic(path, build_report(entries, title=title, summary=summary, max_side=max_side))
    return path


# -- a run's report --------------------------------------------------------------------------------
def run_entries(report: dict, out_dir: str) -> list[SceneEntry]:
    """The scenes of a run report (``<job>.report.json``), with their outputs under ``out_dir``."""
    from geoseg.io.slices import extension

    entries = []
    for row in report.get("scenes", []):
        outputs = [os.path.join(out_dir, o) for o in row.get("outputs") or []]
        vectors = next((o for o in outputs if ".mask." not in os.path.basename(o)), None)
        mask = next((o for o in outputs if ".mask." in os.path.basename(o)), None)
        if mask is not None and extension(mask) not in DRAWN_MASKS:
            mask = None
        stats = {
            k: row[k] for k in ("objects", "tiles_run", "seconds", "tiles_per_second", "reason") if k in row
        }
        entries.append(
            SceneEntry(
                row["scene"],
                row["result"],
                image=row.get("href"),
                vectors=vectors,
                mask=mask,
                bands=tuple(row["bands"]) if row.get("bands") else None,
                crs=row.get("crs"),
                error=row.get("error"),
                stats=stats,
            )
        )
    return entries


def run_summary(report: dict) -> dict:
    keep = ("job", "started", "finished", "seconds", "tiles_run", "tiles_per_second", "objects", "model")
    return {k: report[k] for k in keep if report.get(k) is not None}
