"""Writing class masks (GeoTIFF/TIFF, PNG, NIfTI, NumPy) and pixel-space outlines as GeoJSON.

A mask holds one uint8 class index per pixel (0 = background). Every file is written under a
temporary name in its destination folder and renamed into place when complete; a failed run leaves
nothing behind. GeoTIFF/TIFF masks are written window by window (tiled, deflate-compressed, with the
input's CRS and transform), so a mask of any size is written without holding it in memory, and
finally rewritten as a Cloud Optimized GeoTIFF with overviews (GDAL's COG driver, block by block,
nearest-neighbour overviews of the class indexes) for fast browsing in QGIS or a web map; PNG,
NIfTI and ``.npy`` masks are assembled in memory (one byte per pixel) and written at the end. A
volume's mask (NIfTI or a NumPy stack input) is a NIfTI file with the input's shape, affine and
header, or a ``.npy`` array of the input's shape.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoseg.errors import OutputError
from geoseg.io.atomic import check_writable
from geoseg.io.gdal import gdal_env
from geoseg.io.slices import extension, resize_labels

MASK_EXTENSIONS = (".tif", ".tiff", ".png", ".nii", ".nii.gz", ".npy")
VOLUME_MASK_EXTENSIONS = (".nii", ".nii.gz", ".npy")


def check_mask_path(path: str | os.PathLike, *, volume: bool, overwrite: bool) -> None:
    """Fail before any work when ``path`` cannot take the mask (type, existing file, folder)."""
    ext = extension(path)
    allowed = VOLUME_MASK_EXTENSIONS if volume else MASK_EXTENSIONS
    if ext not in allowed:
        what = "a volume's mask" if volume else "a mask"
        raise OutputError(f"mask '{path}': {what} is written as {', '.join(allowed)}, not '{ext or path}'")
    if ext in (".nii", ".nii.gz") and not volume:
        raise OutputError(f"mask '{path}': NIfTI masks are for volume inputs (use .tif, .png or .npy)")
    check_writable(path, overwrite=overwrite)


class MaskWriter:
    """A mask file being written. Use as a context manager: the file appears only when the block
    exits without an error.

    Parameters
    ----------
    path
        Destination (its extension chooses the format, see :data:`MASK_EXTENSIONS`).
    shape
        ``(H, W)`` for one image; the volume's shape for a volume (slices along ``axis``).
    axis
        The axis slices are taken along, for a volume.
    crs, transform
        Georeferencing of a GeoTIFF mask (None and identity for pixel-space slices).
    nifti
        The input's NIfTI image, whose affine and header a NIfTI mask keeps.
    plane
        ``(h, w)`` of the grid each image was predicted on, where that differs from the input's
        (a slice resampled to the model's pixel spacing): blocks are written on that grid, in
        memory, and each image is resized back to the input's size (nearest class) when committed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, ...],
        *,
        axis: int = 0,
        crs=None,
        transform: Affine | None = None,
        nifti=None,
        overwrite: bool = False,
        plane: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.ext = extension(path)
        self.shape, self.axis = tuple(int(s) for s in shape), axis
        self.volume = len(self.shape) == 3
        check_mask_path(self.path, volume=self.volume, overwrite=overwrite)
        stem = self.path.name[: len(self.path.name) - len(self.ext)]
        self.tmp = self.path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{self.ext}")
        self.cog = self.tmp.with_name(self.tmp.name.replace(".tmp", ".cog", 1))  # the GeoTIFF's final form
        self.crs, self.transform, self.nifti = crs, transform, nifti
        self._ds = None
        self._array = None
        own = self.shape[-2:] if not self.volume else tuple(s for i, s in enumerate(self.shape) if i != axis)
        self.plane = tuple(int(v) for v in plane) if plane is not None and tuple(plane) != own else None
        self._planes: dict = {}  # image index -> its class indexes on the grid it was predicted on
        if self.ext in (".tif", ".tiff") and self.plane is None:
            self._create_tiff()
        else:
            self._array = np.zeros(self.shape, np.uint8)

    # A writer moves between the workers that stitch a scene: it pickles without its open dataset,
    # which the next user opens again (``r+``) when it first writes.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def release(self) -> None:
        """Close the open dataset (a GeoTIFF mask); the next write opens it again."""
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def _dataset(self):
        if self._ds is None:
            try:
                self._ds = rasterio.open(self.tmp, "r+")
            except RasterioError as exc:
                raise OutputError(f"mask '{self.path}': cannot be written ({exc})") from exc
        return self._ds

    def _create_tiff(self) -> None:
        height, width = self.shape
        profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       compress="deflate", BIGTIFF="IF_SAFER")  # fmt: skip
        if width >= 256 and height >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        transform = self.transform or Affine.identity()
        if self.crs is not None or not transform.is_identity:
            profile.update(crs=self.crs, transform=self.transform)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(self.tmp, "w", SPARSE_OK=True, **profile):
                    pass  # created empty; blocks are written through r+ as they are finished
        except RasterioError as exc:
            raise OutputError(f"mask '{self.path}': cannot be created ({exc})") from exc

    def writer(self, index: int | None = None):
        """A callable ``write(row_off, col_off, block)`` for one image (``index`` of a volume)."""
        if self._array is None:

            def write_tiff(r0: int, c0: int, block: np.ndarray) -> None:
                h, w = block.shape
                self._dataset().write(block[None], window=Window(c0, r0, w, h))

            return write_tiff
        target = self._image(index)

        def write_array(r0: int, c0: int, block: np.ndarray) -> None:
            h, w = block.shape
            target[r0 : r0 + h, c0 : c0 + w] = block

        return write_array

    def eraser(self, index: int | None = None):
        """A callable ``erase([(polygon, class), ...])`` that sets those regions (pixel space) of
        one image (``index`` of a volume) back to background, where they still hold that class."""
        return self._painter(index, fill=False)

    def filler(self, index: int | None = None):
        """A callable ``fill([(polygon, class), ...])`` that sets the background pixels of those
        regions (pixel space) of one image to that class (region completion,
        :mod:`geoseg.inference.complete`)."""
        return self._painter(index, fill=True)

    def _painter(self, index: int | None, *, fill: bool):
        write = self.writer(index)
        read = self._reader(index)

        def paint(regions) -> None:
            for polygon, label in regions:
                left, top, right, bottom = polygon.bounds
                x0, y0 = math.floor(left), math.floor(top)
                h, w = math.ceil(bottom) - y0, math.ceil(right) - x0
                if h <= 0 or w <= 0:
                    continue
                block = read(y0, x0, h, w)
                inside = features.rasterize([(polygon, 1)], out_shape=(h, w),
                                            transform=Affine.translation(x0, y0), dtype="uint8")  # fmt: skip
                if fill:
                    block[(inside == 1) & (block == 0)] = label
                else:
                    block[(inside == 1) & (block == label)] = 0
                write(y0, x0, block)

        return paint

    def sinks(self, index: int | None = None) -> dict:
        """``mask``, ``erase`` and ``fill`` callables of one image, as
        :func:`geoseg.inference.engine.predict_blended` takes them."""
        return {"mask": self.writer(index), "erase": self.eraser(index), "fill": self.filler(index)}

    def _reader(self, index: int | None):
        if self._array is None:
            return lambda r0, c0, h, w: self._dataset().read(1, window=Window(c0, r0, w, h))
        target = self._image(index)
        return lambda r0, c0, h, w: target[r0 : r0 + h, c0 : c0 + w].copy()

    def _image(self, index: int | None) -> np.ndarray:
        """The in-memory array of one image: the whole array, or a view of slice ``index``; on the
        prediction grid where that differs (``plane``)."""
        if self.plane is not None:
            return self._planes.setdefault(index, np.zeros(self.plane, np.uint8))
        return self._input_image(index)

    def _input_image(self, index: int | None) -> np.ndarray:
        if not self.volume:
            return self._array
        sel: list = [slice(None)] * 3
        sel[self.axis] = int(index)
        return self._array[tuple(sel)]

    def commit(self) -> None:
        try:
            for index, labels in self._planes.items():  # back to the input's grid
                self._input_image(index)[...] = resize_labels(labels, self._input_image(index).shape)
            if self.ext in (".tif", ".tiff") and self._array is not None:
                self._create_tiff()
                self._dataset().write(self._array[None])
                self.release()
                self._to_cog()
            elif self._array is None:
                self.release()
                self._to_cog()
            elif self.ext == ".npy":
                with open(self.tmp, "wb") as f:
                    np.save(f, self._array)
            elif self.ext == ".png":
                h, w = self.shape
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(self.tmp, "w", driver="PNG", width=w, height=h, count=1,
                                       dtype="uint8") as dst:  # fmt: skip
                        dst.write(self._array[None])
            else:
                self._write_nifti()
            with open(self.tmp, "rb") as f:  # on disk before it takes the final name
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        finally:
            self.abort()

    def _to_cog(self) -> None:
        """Rewrite the finished tiled GeoTIFF as a Cloud Optimized GeoTIFF with overviews (GDAL's
        COG driver, which reads its source block by block), in place of ``tmp``."""
        import rasterio.shutil

        with warnings.catch_warnings(), gdal_env():  # GDAL's block cache bounded as for every read
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                rasterio.shutil.copy(
                    self.tmp, self.cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256, BIGTIFF="IF_SAFER",
                    OVERVIEW_RESAMPLING="NEAREST",  # class indexes: never averaged
                )  # fmt: skip
            except RasterioError as exc:
                raise OutputError(f"mask '{self.path}': cannot be written as a COG ({exc})") from exc
        os.replace(self.cog, self.tmp)

    def _write_nifti(self) -> None:
        import nibabel as nib

        if self.nifti is not None:
            header = self.nifti.header.copy()
            img = nib.Nifti1Image(self._array, self.nifti.affine, header=header)
        else:
            img = nib.Nifti1Image(self._array, np.eye(4))
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1, 0)
        nib.save(img, str(self.tmp))

    def abort(self) -> None:
        """Drop the unfinished file (nothing is left at the destination)."""
        self.release()
        for leftover in (self.tmp, Path(f"{self.tmp}.aux.xml"), self.cog):
            leftover.unlink(missing_ok=True)

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
