"""A run's results as a STAC Collection: one label Item per scene result, written with pystac.

``<outputs>/stac/collection.json`` holds one Item per scene that is done (the same scenes as the
combined layer), each using the label extension: ``label:type`` vector, ``label:tasks``
(detection and segmentation for instance models, segmentation for semantic ones),
``label:properties`` and ``label:classes`` (the ``class`` attribute and its values), and
``label:overviews`` with the count of objects of each class. Its assets are the scene's output
files with their media types (relative hrefs, so the folder can be moved or served as it is); a
scene read from a STAC catalogue links to its input item with ``rel: source``; properties name
geoseg's version and the model's name and hash. The Collection's own assets are the combined
layer and the run report.

The catalogue is written whole into a temporary folder beside ``stac/`` and swapped into place,
and only when a scene's result changed since it was last written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile

from geoseg.errors import GeosegError, one_line

LABEL_EXTENSION = "https://stac-extensions.github.io/label/v1.0.1/schema.json"
STAC_DIR = "stac"
#: media types of the files a run writes
MEDIA_TYPES = {
    ".geojson": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".parquet": "application/vnd.apache.parquet",
    ".fgb": "application/vnd.flatgeobuf",
    ".shp": "application/vnd.shp",
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".png": "image/png",
    ".npy": "application/x-npy",
    ".nii": "application/x-nifti",
    ".nii.gz": "application/x-nifti",
    ".html": "text/html",
    ".json": "application/json",
}


class StacError(GeosegError):
    """The results' STAC Collection cannot be written."""


def media_type(path: str) -> str | None:
    name = path.lower()
    for ext in sorted(MEDIA_TYPES, key=len, reverse=True):
        if name.endswith(ext):
            return MEDIA_TYPES[ext]
    return None


def scene_footprint(href: str, bands=None, crs=None) -> dict | None:
    """The scene's outline in EPSG:4326 as a GeoJSON geometry (densified edges), or None for a
    scene without a CRS (a slice in pixel space)."""
    from geoseg.io.georef import lonlat_footprint
    from geoseg.io.scene import Scene

    with Scene(href, bands=bands, crs=crs, warn=False) as scene:
        return lonlat_footprint(scene.transform, scene.width, scene.height, scene.crs)


def _item(key: str, rec: dict, job, model_name: str, seg) -> pystac.Item:  # noqa: F821
    import pystac
    import shapely
    from pystac.extensions.label import LabelClasses, LabelCount, LabelExtension, LabelOverview, LabelType

    from geoseg import __version__
    from geoseg.io.vectors import read_layer

    outputs = rec.get("outputs", [])
    geometry = rec.get("footprint")
    bbox = list(shapely.geometry.shape(geometry).bounds) if geometry else None
    when = rec.get("stac_datetime") or rec.get("finished")
    datetime = dt.datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None
    props = {
        "geoseg:version": __version__,
        "geoseg:model": model_name,
        "geoseg:model_hash": rec.get("model_hash"),
        "geoseg:params_hash": rec.get("params_hash"),
        "geoseg:scene": rec.get("href"),
        "geoseg:objects": rec.get("objects", 0),
        "created": rec.get("finished"),
    }
    item = pystac.Item(key, geometry, bbox, datetime, props)
    classes = [c for c in getattr(seg, "classes", ()) if c != "background"]
    counts: dict[str, int] = {}
    if outputs:
        try:
            layer = read_layer(os.path.join(job.out_dir, outputs[0]), columns=["class"])
            if "class" in layer.columns:
                counts = {str(k): int(v) for k, v in layer["class"].value_counts().sort_index().items()}
        except Exception as exc:  # pyogrio raises several kinds for unreadable files
            raise StacError(
                f"scene '{key}': its output '{outputs[0]}' cannot be read ({one_line(exc)})"
            ) from exc
    classes += [c for c in counts if c not in classes]
    label = LabelExtension.ext(item, add_if_missing=True)
    instance = seg.task != "semantic"
    label.apply(
        label_description=f"{', '.join(classes) or 'objects'} found by geoseg with {model_name}",
        label_type=LabelType.VECTOR,
        label_properties=["class"],
        label_classes=[LabelClasses.create(classes=classes, name="class")],
        label_tasks=["detection", "segmentation"] if instance else ["segmentation"],
        label_methods=["automated"],
        label_overviews=[
            LabelOverview.create(
                property_key="class",
                counts=[LabelCount.create(name=c, count=counts.get(c, 0)) for c in classes],
            )
        ],
    )
    for n, rel in enumerate(outputs):
        is_mask = ".mask." in os.path.basename(rel)
        item.add_asset(
            "mask" if is_mask else "labels" if n == 0 else f"output-{n}",
            pystac.Asset(
                os.path.join(job.out_dir, rel),
                title="class mask" if is_mask else "objects",
                media_type=media_type(rel),
                roles=["labels", "labels-raster" if is_mask else "labels-vector"],
            ),
        )
    return item


def _source_link(key: str, rec: dict):
    """The ``source`` link to the scene's input item (added once hrefs are laid out: pystac
    resolves every link it holds while it does that, and an item collection is not a STAC object)."""
    import pystac

    if not rec.get("stac_href"):
        return None
    return pystac.Link(
        "source",
        rec["stac_href"],
        media_type="application/geo+json",
        title=f"input item {rec.get('item_id') or key}",
    )


def write_collection(job, state, model, seg) -> str:
    """Write (or leave, when nothing changed) the job's results Collection; returns its path
    relative to the outputs folder."""
    import pystac

    from geoseg.batch.runstate import results_digest

    done = state.records("done")
    target = os.path.join(job.out_dir, STAC_DIR)
    collection_file = os.path.join(target, "collection.json")
    digest = results_digest(done, _collection_assets(job))
    with contextlib.suppress(OSError, ValueError):
        with open(collection_file, encoding="utf-8") as f:
            if json.load(f).get("geoseg:state") == digest:
                return os.path.relpath(collection_file, job.out_dir)
    for _, rec in done:  # scenes done before footprints were recorded
        if "footprint" not in rec:
            with contextlib.suppress(GeosegError, OSError):
                rec["footprint"] = scene_footprint(rec["href"])
    items = [_item(k, r, job, model.name, seg) for k, r in done]
    boxes = [i.bbox for i in items if i.bbox]
    times = [i.datetime for i in items if i.datetime]
    spatial = (
        [
            [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
        ]
        if boxes
        else [[-180.0, -90.0, 180.0, 90.0]]
    )
    temporal = [[min(times), max(times)]] if times else [[None, None]]
    collection = pystac.Collection(
        id=job.name,
        description=f"Results of the geoseg job {job.name}",
        extent=pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent(temporal)),
        license="other",
        stac_extensions=[LABEL_EXTENSION],
        extra_fields={"geoseg:state": digest},
        summaries=pystac.Summaries({"label:type": ["vector"]}),
    )
    collection.add_items(items)
    tmp = tempfile.mkdtemp(prefix=f".{STAC_DIR}-tmp-", dir=job.out_dir)  # a sibling: relative hrefs hold
    try:
        os.chmod(tmp, 0o755)
        collection.normalize_hrefs(tmp + os.sep)
        collection.make_all_asset_hrefs_relative()
        for item, (key, rec) in zip(items, done, strict=True):
            link = _source_link(key, rec)
            if link is not None:
                item.add_link(link)
        for f in _collection_assets(job):  # the run writes the report right after its catalogue
            role = "overview" if f.endswith(".html") else "data"
            collection.add_asset(
                "report" if role == "overview" else "combined",
                pystac.Asset("../" + f, media_type=media_type(f), roles=[role]),
            )
        collection.save(pystac.CatalogType.SELF_CONTAINED)
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.relpath(collection_file, job.out_dir)


def _collection_assets(job) -> list[str]:
    """The Collection's own files, relative to the outputs folder: the combined layer and reports."""
    from geoseg.io.vectors import FORMATS

    out = []
    if job.combined != "none":
        out.append(job.name + FORMATS[job.combined][0])
    if job.report == "html":
        out.append(f"{job.name}.report.html")
    return out


def _swap(new: str, target: str) -> None:
    """Put folder ``new`` where ``target`` is; readers see the old or the new catalogue whole, save
    for the instant between two renames."""
    from geoseg.io.atomic import fsync_dir

    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{STAC_DIR}-old-", dir=os.path.dirname(target))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(new, target)
    fsync_dir(os.path.dirname(target))
    if old:
        shutil.rmtree(old, ignore_errors=True)
