"""Medical-style slices as geoseg scenes, and image/mask pairs for training and evaluation.

A slice is a scene in pixel space: an identity transform and no CRS, so geometries are in pixel
coordinates (x = column, y = row) and no NoCRSWarning is raised. :class:`SliceScene` reads NumPy
``.npy`` arrays (a 2-D slice, a ``(N, H, W)`` stack or a ``(N, C, H, W)`` stack), DICOM files
(pydicom; stored values rescaled to Hounsfield units with RescaleSlope/RescaleIntercept, optionally
clipped to a window) and NIfTI volumes (nibabel; slices along an axis, the affine kept for
outputs). PNG, JPEG and TIFF slices are read by GDAL through :class:`geoseg.io.scene.Scene`.

:func:`load_pairs` reads a folder of images and a folder of masks matched by file stem.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import SceneError, one_line

#: extensions opened by :class:`SliceScene` (PNG/JPEG/TIFF go through GDAL)
SLICE_EXTENSIONS = (".npy", ".dcm", ".nii", ".nii.gz")
#: image extensions :func:`load_pairs` accepts
IMAGE_EXTENSIONS = (".npy", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
#: mask extensions :func:`load_pairs` accepts
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
VOLUME_EXTENSIONS = (".nii", ".nii.gz")
#: NIfTI slices are taken along the last spatial axis unless told otherwise
DEFAULT_VOLUME_AXIS = 2


def extension(path: str | os.PathLike) -> str:
    """The lower-case extension of ``path``, with ``.nii.gz`` as one extension."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its extension (``case1.nii.gz`` -> ``case1``)."""
    name = Path(path).name
    return name[: len(name) - len(extension(name))] if extension(name) else name


def is_slice_file(path: str | os.PathLike) -> bool:
    """True for the local files :class:`SliceScene` opens (NumPy, DICOM, NIfTI); a URI is read by
    GDAL.

    >>> is_slice_file("ct.nii.gz"), is_slice_file("https://host/ct.npy")
    (True, False)
    """
    return extension(path) in SLICE_EXTENSIONS and "://" not in str(path)


# -- reading files --------------------------------------------------------------------------------
def read_npy(path: str | os.PathLike, *, mmap: bool = True) -> np.ndarray:
    """A NumPy array file, memory-mapped where possible; object arrays (pickles) are refused."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise SceneError(f"'{path}': not a plain NumPy array ({one_line(exc)})") from exc
    except OSError as exc:
        raise SceneError(f"'{path}': not a readable .npy file ({one_line(exc)})") from exc


def read_dicom(path: str | os.PathLike, *, hu_window: tuple[float, float] | None = None) -> np.ndarray:
    """A DICOM image as float32: ``(H, W)``, ``(frames, H, W)`` or ``(3, H, W)`` for colour.

    Stored values go through the modality transform (RescaleSlope/RescaleIntercept, or a modality
    LUT), giving Hounsfield units for CT. ``hu_window=(center, width)`` clips to that window.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_rescale

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError, RuntimeError) as exc:
        raise SceneError(f"DICOM '{path}': not readable ({one_line(exc)})") from exc
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour: (..., H, W, 3) -> channels first, no rescale
        return np.moveaxis(np.asarray(pixels, np.float32), -1, -3)
    hu = np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    if hu_window is not None:
        center, width = hu_window
        hu = np.clip(hu, center - width / 2, center + width / 2)
    return hu


def read_raster_file(path: str | os.PathLike) -> np.ndarray:
    """A PNG/JPEG/TIFF image read by GDAL as float32 ``(C, H, W)``."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from geoseg.io.gdal import ALLOWED_DRIVERS, gdal_env

    try:
        with warnings.catch_warnings(), gdal_env():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if ds.driver not in ALLOWED_DRIVERS:
                    raise SceneError(f"'{path}': raster driver {ds.driver} is not allowed")
                return ds.read().astype(np.float32, copy=False)
    except RasterioError as exc:
        raise SceneError(f"'{path}': not a readable image ({one_line(exc)})") from exc


def read_image(path: str | os.PathLike, *, hu_window: tuple[float, float] | None = None) -> np.ndarray:
    """One image as float32 ``(C, H, W)``: ``.npy`` (2-D or ``(C, H, W)``), PNG/JPEG/TIFF, DICOM."""
    ext = extension(path)
    if ext == ".npy":
        arr = read_npy(path, mmap=False)
        if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
            raise SceneError(
                f"image '{path}': expected a 2-D or (C, H, W) numeric array, got {arr.ndim} dimensions "
                f"of {arr.dtype}"
            )
        arr = arr.astype(np.float32)
    elif ext == ".dcm":
        arr = read_dicom(path, hu_window=hu_window)
        if arr.ndim == 3 and not _is_colour_dicom(arr):
            raise SceneError(f"DICOM '{path}': has {arr.shape[0]} frames; one slice per file expected")
    elif ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        arr = read_raster_file(path)
    else:
        raise SceneError(f"image '{path}': unsupported type '{ext}' (use {', '.join(IMAGE_EXTENSIONS)})")
    return arr[None] if arr.ndim == 2 else arr


def _is_colour_dicom(arr: np.ndarray) -> bool:
    return arr.ndim == 3 and arr.shape[0] == 3


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask as uint8 ``(H, W)`` with values 0 and 1 (any non-zero value is foreground)."""
    ext = extension(path)
    if ext == ".npy":
        arr = read_npy(path, mmap=False)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise SceneError(f"mask '{path}': expected a 2-D array, got shape {arr.shape}")
    elif ext in (".png", ".tif", ".tiff"):
        arr = read_raster_file(path).max(axis=0)  # colour masks: foreground in any band
    else:
        raise SceneError(f"mask '{path}': unsupported type '{ext}' (use {', '.join(MASK_EXTENSIONS)})")
    return (np.nan_to_num(arr) > 0).astype(np.uint8)


def read_volume(path: str | os.PathLike):
    """A NIfTI volume (nibabel image, data not loaded). 4-D volumes with one volume are accepted."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
    except (ImageFileError, OSError, ValueError, EOFError) as exc:
        raise SceneError(f"volume '{path}': not a readable NIfTI file ({one_line(exc)})") from exc
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    elif len(shape) != 3:
        raise SceneError(
            f"volume '{path}': expected 3 dimensions (or 4 with one volume), got {len(shape)} "
            f"(shape {tuple(shape)})"
        )
    return img


def volume_slice(img, index: int, axis: int) -> np.ndarray:
    """Slice ``index`` of a NIfTI volume along ``axis`` as a 2-D array (reads only that slice)."""
    sel = [slice(None)] * 3
    sel[axis] = index
    return np.asarray(img.dataobj[tuple(sel)])


def pixel_spacing(path: str | os.PathLike, axis: int | None = None) -> tuple[float, float] | None:
    """A slice file's pixel spacing in millimetres as ``(rows, columns)``: DICOM ``PixelSpacing``,
    or a NIfTI volume's voxel sizes in the plane of its slices along ``axis`` (default 2); None for
    formats that do not record one (NumPy, PNG, TIFF) or a file that records none."""
    ext = extension(path)
    try:
        if ext == ".dcm":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            value = ds.get("PixelSpacing")
            spacing = (float(value[0]), float(value[1])) if value is not None and len(value) == 2 else None
        elif ext in VOLUME_EXTENSIONS:
            zooms = read_volume(path).header.get_zooms()[:3]
            a = DEFAULT_VOLUME_AXIS if axis is None else int(axis)
            spacing = tuple(float(z) for i, z in enumerate(zooms) if i != a)
        else:
            return None
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SceneError(f"scene '{path}': cannot read its pixel spacing ({one_line(exc)})") from exc
    if spacing is None or not all(np.isfinite(v) and v > 0 for v in spacing):
        return None
    return spacing


def resample_plane(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(C, H, W)`` float32 resampled bilinearly to ``(C, *shape)`` (pixel centres kept aligned);
    NaN pixels stay NaN (nearest), the rest never mix with them."""
    from scipy import ndimage

    h0, w0 = data.shape[-2:]
    rows = (np.arange(shape[0]) + 0.5) * (h0 / shape[0]) - 0.5
    cols = (np.arange(shape[1]) + 0.5) * (w0 / shape[1]) - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((data.shape[0], *shape), np.float32)
    for i, band in enumerate(np.asarray(data, np.float32)):
        nan = np.isnan(band)
        filled = np.where(nan, np.nanmean(band) if not nan.all() else 0.0, band)
        out[i] = ndimage.map_coordinates(filled, [rr, cc], order=1, mode="nearest")
        if nan.any():
            out[i][ndimage.map_coordinates(nan.astype(np.uint8), [rr, cc], order=0, mode="nearest") > 0] = (
                np.nan
            )
    return out


AIR_HU = -1000.0  # air in Hounsfield units, by the definition of the scale


def body_mask(band: np.ndarray, body_above: float) -> np.ndarray:
    """The body of a CT slice ``(H, W)``: its largest 4-connected region above ``body_above``, holes
    (lungs, gas) filled; all False where nothing is above it. NaN is never body tissue."""
    from scipy import ndimage

    tissue, n = ndimage.label((band > body_above) & ~np.isnan(band))
    if n == 0:
        return np.zeros(band.shape, bool)
    return ndimage.binary_fill_holes(tissue == 1 + int(np.argmax(np.bincount(tissue.ravel())[1:])))


def air_offset(
    image: np.ndarray, reference: float = AIR_HU, *, body_above: float = -500.0, lowest: float = -1500.0
) -> np.ndarray:
    """What each band of a CT slice ``(C, H, W)`` (or ``(H, W)``) gets added so that the air outside
    the body reads ``reference``: a scanner's calibration, which differs between scanners by tens of
    HU, taken from the slice itself. The air is the median of the pixels outside the body (the
    largest region above ``body_above``, holes filled, widened by 3 pixels) that lie between
    ``lowest`` and ``body_above``: padding outside the reconstruction circle (-2048 or -3024 on many
    scanners) and NaN are left out. A band with fewer than 1 % of its pixels in that air (the body
    fills the field of view) gets 0.

    >>> ct = np.full((64, 64), -960.0); ct[12:52, 12:52] = 40.0
    >>> air_offset(ct).tolist()
    [-40.0]
    """
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float32)
    data = data[None] if data.ndim == 2 else data
    out = np.zeros(data.shape[0], np.float64)
    for b, band in enumerate(data):
        body = ndimage.binary_dilation(body_mask(band, body_above), iterations=3)
        air = np.isfinite(band) & ~body & (band > lowest) & (band < body_above)
        if air.sum() >= 0.01 * band.size:
            out[b] = float(reference) - float(np.median(band[air]))
    return out


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A class-index image at another size, each output pixel taking the class at its centre."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * (h / shape[0])).astype(int), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * (w / shape[1])).astype(int), w - 1)
    return labels[rows][:, cols]


# -- slices as scenes -----------------------------------------------------------------------------
@dataclass
class SliceScene:
    """One slice, read like a :class:`geoseg.io.scene.Scene`: ``read(window)`` gives float32
    ``(C, h, w)`` with NaN where the source has NaN. Use as a context manager, or call :meth:`close`.

    Attributes: ``width``, ``height``, ``count``, ``bands``, ``crs``, ``gsd`` and ``native_gsd``
    (always None), ``transform`` (identity: pixel space), ``name``, ``path``, ``ref``; ``affine`` is
    the NIfTI volume's voxel to world affine (None for other files), ``slices`` how many slices the
    file holds, ``native_spacing`` the file's pixel spacing in mm (``(rows, columns)``, or None).

    With ``spacing`` (mm, ``(rows, columns)``), a slice whose file records another spacing is seen
    resampled to it (bilinearly): width and height are the new grid's, and ``transform`` maps its
    pixels back to the file's (``input_shape``), so outlines land on the input image.

    With ``air`` (HU, usually -1000), each band is shifted so that the air outside the body reads
    ``air`` (:func:`air_offset`, a CT scanner's calibration); ``air_shift`` is what was added.
    """

    path: str
    bands: Sequence[int] | None = None
    index: int | None = None
    axis: int | None = None
    hu_window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None
    air: float | None = None
    crs: None = field(default=None, init=False)
    gsd: None = field(default=None, init=False)
    native_gsd: None = field(default=None, init=False)
    affine: np.ndarray | None = field(default=None, init=False, repr=False)
    slices: int = field(default=1, init=False)
    input_shape: tuple[int, int] = field(default=(0, 0), init=False)
    air_shift: tuple[float, ...] | None = field(default=None, init=False)
    #: the :class:`geoseg.io.refs.SliceRef` that reopens this slice (set by its ``open``)
    ref: Any = field(default=None, init=False, repr=False)
    _data: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if not os.path.exists(self.path):
            raise SceneError(f"scene '{self.path}': no such file")
        if os.path.isdir(self.path):
            raise SceneError(f"scene '{self.path}': is a directory, not an image")
        stack = self._load_stack()  # (N, C, H, W), lazily read where the format allows
        self.slices = stack.shape[0]
        if self.index is None:
            if self.slices != 1:
                raise SceneError(
                    f"scene '{self.path}': holds {self.slices} slices; choose one (geoseg predict "
                    "predicts every slice)"
                )
            index = 0
        else:
            index = int(self.index)
        if not 0 <= index < self.slices:
            raise SceneError(f"scene '{self.path}': slice {index} does not exist (it has {self.slices})")
        data = stack[index]
        count = data.shape[0]
        bands = tuple(self.bands) if self.bands else tuple(range(1, count + 1))
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise SceneError(f"scene '{self.path}': band {bad[0]} does not exist (the slice has {count})")
        self.bands = bands
        self.input_shape = (int(data.shape[-2]), int(data.shape[-1]))
        shape = self.input_shape
        if self.spacing is not None:  # the file's own spacing is read only when another is asked for
            shape = resampled_shape(self.input_shape, self.native_spacing, self.spacing)
        if shape != self.input_shape:
            data = resample_plane(np.asarray(data), shape)
        if self.air is not None:
            shift = air_offset(data, self.air)
            data = np.asarray(data, np.float32) + shift.astype(np.float32)[:, None, None]
            self.air_shift = tuple(float(v) for v in shift.astype(np.float32))
        self._data = data

    def _load_stack(self):
        ext = extension(self.path)
        if ext == ".npy":
            arr = read_npy(self.path)
            if not np.issubdtype(arr.dtype, np.number):
                raise SceneError(f"scene '{self.path}': array of {arr.dtype} is not numeric")
            if arr.ndim == 2:
                return arr[None, None]
            if arr.ndim == 3:  # a stack of single-channel slices
                return arr[:, None]
            if arr.ndim == 4:
                return arr
            raise SceneError(
                f"scene '{self.path}': expected a 2-D slice, (N, H, W) or (N, C, H, W) stack, got "
                f"{arr.ndim} dimensions (shape {arr.shape})"
            )
        if ext == ".dcm":
            arr = read_dicom(self.path, hu_window=self.hu_window)
            if arr.ndim == 2:
                return arr[None, None]
            return arr[None] if _is_colour_dicom(arr) else arr[:, None]
        if ext in VOLUME_EXTENSIONS:
            img = read_volume(self.path)
            self.affine = np.asarray(img.affine)
            return _VolumeSlices(img, DEFAULT_VOLUME_AXIS if self.axis is None else int(self.axis))
        raise SceneError(f"scene '{self.path}': unsupported slice type '{ext}'")

    # -- metadata ---------------------------------------------------------------------------
    @functools.cached_property
    def native_spacing(self) -> tuple[float, float] | None:
        """The file's pixel spacing in mm (see :func:`pixel_spacing`), read once."""
        return pixel_spacing(self.path, self.axis)

    @property
    def width(self) -> int:
        return int(self._data.shape[-1])

    @property
    def height(self) -> int:
        return int(self._data.shape[-2])

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def transform(self) -> Affine:
        """Grid pixels to the file's pixels: identity, or a scale where the slice is resampled."""
        h0, w0 = self.input_shape
        if (h0, w0) == (self.height, self.width):
            return Affine.identity()
        return Affine.scale(w0 / self.width, h0 / self.height)

    @property
    def pixel_space(self) -> bool:
        return True

    @property
    def name(self) -> str:
        stem = file_stem(self.path)
        return stem if self.index is None else f"{stem}_{int(self.index):04d}"

    # -- reading ----------------------------------------------------------------------------
    def read(self, window: Window) -> np.ndarray:
        """Read ``window`` as float32 ``(C, h, w)`` (clipped to the slice, like a raster read)."""
        r0, c0 = max(0, int(window.row_off)), max(0, int(window.col_off))
        r1 = min(self.height, int(window.row_off + window.height))
        c1 = min(self.width, int(window.col_off + window.width))
        sel = np.asarray(self.bands) - 1
        return np.asarray(self._data[:, r0:r1, c0:c1], dtype=np.float32)[sel]

    def close(self) -> None:
        self._data = None

    def __enter__(self) -> SliceScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resampled_shape(shape: tuple[int, int], native, target) -> tuple[int, int]:
    """The size of a ``shape`` slice at ``native`` spacing seen at ``target`` spacing (mm, rows and
    columns); the same size when either is unknown or they agree within 1 %."""
    if native is None or target is None:
        return tuple(shape)
    factors = [n / t for n, t in zip(native, target, strict=True)]
    if all(abs(f - 1) <= 0.01 for f in factors):
        return tuple(shape)
    return tuple(max(1, round(s * f)) for s, f in zip(shape, factors, strict=True))


class _VolumeSlices:
    """A NIfTI volume indexed like an ``(N, 1, H, W)`` stack of slices along ``axis``."""

    def __init__(self, img, axis: int) -> None:
        if axis not in (0, 1, 2):
            raise SceneError(f"volume axis must be 0, 1 or 2, got {axis}")
        self.img, self.axis = img, axis
        self.shape = (img.shape[axis], 1, *(s for i, s in enumerate(img.shape[:3]) if i != axis))

    def __getitem__(self, index: int) -> np.ndarray:
        return volume_slice(self.img, index, self.axis).astype(np.float32)[None]


# -- image / mask pairs ---------------------------------------------------------------------------
def load_pairs(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    axis: int = DEFAULT_VOLUME_AXIS,
    hu_window: tuple[float, float] | None = None,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Image/mask pairs matched by file stem, as ``(id, image, mask)`` sorted by id.

    ``image`` is float32 ``(C, H, W)`` (a 2-D ``.npy``, PNG or DICOM gives ``C = 1``); ``mask`` is
    uint8 ``(H, W)`` with values 0/1 (``mask > 0``). Images: ``.npy`` (2-D or ``(C, H, W)``),
    ``.png``/``.jpg``/``.tif``, ``.dcm`` (in HU, clipped to ``hu_window`` if given). Masks:
    ``.png``/``.tif``/``.npy``. A NIfTI image volume pairs with the NIfTI mask volume of the same
    stem and gives one pair per slice along ``axis``, with ids ``<stem>_<slice:04d>``.

    Raises SceneError (one line, naming the file) for a missing folder or an empty one, an image
    without a mask, a mask whose size differs from its image, an unreadable file, or a volume that
    is not 3-D. Masks without an image are ignored.
    """
    images = _listing(images_dir, "images", IMAGE_EXTENSIONS + VOLUME_EXTENSIONS)
    masks = _listing(masks_dir, "masks", MASK_EXTENSIONS + VOLUME_EXTENSIONS)
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for stem, image_path in sorted(images.items()):
        mask_path = masks.get(stem)
        if mask_path is None:
            raise SceneError(f"image '{image_path}': no mask named '{stem}.*' in '{masks_dir}'")
        if extension(image_path) in VOLUME_EXTENSIONS:
            pairs.extend(_volume_pairs(stem, image_path, mask_path, axis))
            continue
        if extension(mask_path) in VOLUME_EXTENSIONS:
            raise SceneError(f"mask '{mask_path}': a volume, but its image '{image_path}' is one slice")
        image = read_image(image_path, hu_window=hu_window)
        mask = read_mask(mask_path)
        _check_same_size(image.shape[-2:], mask.shape, image_path, mask_path)
        pairs.append((stem, image, mask))
    return pairs


def _volume_pairs(stem: str, image_path: Path, mask_path: Path, axis: int):
    if extension(mask_path) not in VOLUME_EXTENSIONS:
        raise SceneError(f"image '{image_path}': a volume, but its mask '{mask_path}' is not NIfTI")
    if axis not in (0, 1, 2):
        raise SceneError(f"volume axis must be 0, 1 or 2, got {axis}")
    img, msk = read_volume(image_path), read_volume(mask_path)
    _check_same_size(img.shape[:3], msk.shape[:3], image_path, mask_path)
    image = np.asarray(img.dataobj, dtype=np.float32)
    mask = (np.nan_to_num(np.asarray(msk.dataobj)) > 0).astype(np.uint8)
    return [
        (f"{stem}_{k:04d}", np.take(image, k, axis=axis)[None].copy(), np.take(mask, k, axis=axis).copy())
        for k in range(image.shape[axis])
    ]


def _listing(folder: str | os.PathLike, role: str, exts: tuple[str, ...]) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"{role} folder '{folder}': no such folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or extension(p) not in exts:
            continue
        stem = file_stem(p)
        if stem in found:
            raise SceneError(
                f"{role} folder '{folder}': two files named '{stem}' ({found[stem].name}, {p.name})"
            )
        found[stem] = p
    if not found:
        raise SceneError(f"{role} folder '{folder}': no {role} ({', '.join(exts)}) in it")
    return found


def _check_same_size(image_shape, mask_shape, image_path, mask_path) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise SceneError(
            f"mask '{mask_path}': shape {' x '.join(map(str, mask_shape))} differs from its image "
            f"'{image_path}' ({' x '.join(map(str, image_shape))})"
        )
