"""The model contract every geoseg model follows, and loading a model from ``--model``.

A segmenter is any object with:

- ``task``: ``"instance"`` or ``"semantic"``;
- ``classes``: class names. For instance models ``labels`` index into it (torchvision's convention,
  so ``classes[0]`` is usually ``"background"``); for semantic models it names the output channels,
  and a channel named ``"background"`` is never vectorised;
- ``in_channels``: how many bands it takes;
- ``predict(tiles)``: ``tiles`` is float32 ``(N, C, H, W)`` of raw band values with NaN at nodata
  (the model owns its normalisation). It returns one prediction per tile: for instance models a dict
  ``{"masks": (K, H, W) in [0, 1] or bool, "scores": (K,), "labels": (K,)}`` (``"boxes"`` optional),
  for semantic models a ``(num_classes, H, W)`` array of probabilities. NumPy arrays or torch tensors.

Optional attributes geoseg reads when present: ``name``, ``tile_size``, ``overlap`` (defaults for
``geoseg predict``), ``stride`` (tile positions are aligned to it), ``to(device)`` (a torch model
moves to ``--device``), ``metadata`` (a dict: the checkpoint's metadata, see
:mod:`geoseg.models.checkpoint`, whose ``bands``, ``max_gsd``, ``min_area`` and ``object_limits``
set defaults of a prediction; read through :func:`model_metadata`) and ``measures``: a tuple of
names of measure sets its objects get on top of every feature's properties (default ``()``: none).
``("ship",)`` adds ``length_m``, ``beam_m`` and ``heading_deg`` (see
:mod:`geoseg.inference.attributes`); geoseg's Mask R-CNN takes it from its checkpoint's ``measures``
key (a checkpoint without the key keeps ship measures). A model without the attribute, such as the
threshold plug-ins, gets no such columns.

``--model`` takes a checkpoint file (see :mod:`geoseg.models.checkpoint`), the name of a model
shipped with geoseg (``tankers-light``, ``lungs-unet``) or ``package.module:factory``, a callable
that returns a segmenter, called with the ``--model-arg KEY=VALUE`` options as keywords. From
Python, :func:`geoseg.predict` also takes a segmenter object (:meth:`ModelSpec.of`).

Loaded models are kept in :data:`MODELS`, a bounded cache (least recently used first out; size
``GEOSEG_MODEL_CACHE``, default 4) shared by a process's runs, so a worker loads each model once.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from geoseg.errors import ModelError

TASKS = ("instance", "semantic")
#: how a ``package.module:factory`` model is spelled
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@runtime_checkable
class Segmenter(Protocol):
    """Structural type of a geoseg model (see the module docstring for the full contract)."""

    task: str
    classes: Any
    in_channels: int

    def predict(self, tiles: np.ndarray) -> list: ...


def model_metadata(seg: Any) -> dict:
    """A segmenter's ``metadata`` (its checkpoint's), or ``{}`` for a model without any."""
    return dict(getattr(seg, "metadata", None) or {})


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` and ``--model-arg`` said: picklable, so Dask tasks receive it instead of a
    model; each worker loads the model once and keeps it (see :func:`get_segmenter`)."""

    spec: str
    options: tuple[tuple[str, Any], ...] = field(default=())
    #: a segmenter object handed in from Python (:meth:`of`); travels pickled to a cluster's workers
    instance: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, segmenter: Any) -> ModelSpec:
        """A spec for a segmenter object already in memory: runs use it as it is (no loading,
        no cache)."""
        name = getattr(segmenter, "name", None) or type(segmenter).__name__
        check_segmenter(segmenter, str(name))
        return cls(f"<object {name} at {id(segmenter):#x}>", (), segmenter)

    @classmethod
    def resolve(cls, model: str, options: tuple[tuple[str, Any], ...] = ()) -> ModelSpec:
        """What a user typed: a checkpoint path, a shipped model's name (``tankers-light``) or
        ``module:factory``."""
        if not FACTORY.match(model):
            model = builtin_model(model) or model
        return cls(model, tuple(options))

    @property
    def is_factory(self) -> bool:
        return self.instance is None and bool(FACTORY.match(self.spec)) and not os.path.exists(self.spec)

    @property
    def key(self) -> str:
        """A hash that changes whenever the model would: file contents, or factory and options."""
        h = hashlib.sha256()
        if self.is_factory or self.instance is not None:
            h.update(self.spec.encode())
        else:
            h.update(_file_digest(self.spec).encode())
        h.update(json.dumps(self.options, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    @property
    def name(self) -> str:
        if self.instance is not None:
            return str(getattr(self.instance, "name", None) or type(self.instance).__name__)
        if self.is_factory:
            return self.spec
        return os.path.basename(self.spec)


#: where the models shipped with geoseg live (``tankers-light``, ``lungs-unet``)
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def shipped_models() -> list[str]:
    """Names of the models shipped with geoseg."""
    return sorted(p.name.removesuffix(".safetensors") for p in WEIGHTS.glob("*.safetensors"))


def builtin_model(name: str) -> str | None:
    """The checkpoint path of a model shipped with geoseg (``tankers-light``), or None."""
    if "/" in name or os.sep in name or name.endswith(".safetensors"):
        return None
    p = WEIGHTS / f"{name}.safetensors"
    return str(p) if p.exists() else None


class ModelCache:
    """Loaded models by (model key, device), least recently used first out.

    A model asked for ``auto`` and one asked for the device ``auto`` resolves to are one entry
    (on a machine without a GPU, ``auto`` and ``cpu`` share a model). ``maxsize`` models at most
    are kept; :meth:`clear` empties it (tests, or to free memory between runs).
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = max(1, int(maxsize))
        self._items: OrderedDict[tuple[str, str], Segmenter] = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len({id(v) for v in self._items.values()})

    def get(self, model: ModelSpec, device: str | None = None) -> Segmenter:
        """The segmenter of ``model`` on ``device`` (see :func:`resolve_device`), loaded on first
        use."""
        wanted = check_device(device or "auto")
        with self._lock:
            seg = self._lookup(model.key, wanted)
            if seg is None:
                seg = load_segmenter(model, wanted)
                # kept under the device asked for and the one it runs on
                runs_on = resolve_device(wanted) if callable(getattr(seg, "to", None)) else "cpu"
                self._items[(model.key, wanted)] = self._items[(model.key, runs_on)] = seg
                self._evict()
            for k in [k for k, v in self._items.items() if v is seg]:
                self._items.move_to_end(k)
            return seg

    def _lookup(self, key: str, wanted: str) -> Segmenter | None:
        seg = self._items.get((key, wanted))
        if seg is not None or wanted != "auto":
            return seg
        if "torch" in sys.modules:  # resolving "auto" costs nothing once torch is loaded
            return self._items.get((key, resolve_device("auto")))
        seg = self._items.get((key, "cpu"))  # a model without torch runs on the CPU, whatever "auto" says
        return seg if seg is not None and not callable(getattr(seg, "to", None)) else None

    def _evict(self) -> None:
        while len(self) > self.maxsize:
            oldest = next(iter(self._items.values()))
            for k in [k for k, v in self._items.items() if v is oldest]:
                del self._items[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: the process's models (see :class:`ModelCache`)
MODELS = ModelCache(int(os.environ.get("GEOSEG_MODEL_CACHE", "4")))
_digests: dict[tuple[str, float, int], str] = {}


def _file_digest(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ModelError(
            f"model '{path}': no such file (a factory is spelled package.module:callable)"
        ) from exc
    key = (os.path.abspath(path), st.st_mtime, st.st_size)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]


DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else ModelError.

    >>> check_device("cuda:1")
    'cuda:1'
    """
    if not DEVICE.match(str(device)):
        raise ModelError(f"device '{device}': must be auto, cpu, cuda or cuda:N")
    return str(device)


def resolve_device(device: str | None) -> str:
    """The device a model runs on in *this* process: ``auto`` (or None) is ``cuda`` where torch
    sees a GPU, else ``cpu``. Resolved where the model runs (a worker), not where a run starts."""
    device = check_device(device or "auto")
    if device != "auto":
        return device
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_batch_size(device: str | None) -> int:
    """Tiles per forward pass when none is given: 4 on a CPU (more only adds latency), 16 on a GPU
    (enough to keep it busy with 512 x 512 tiles of a light Mask R-CNN or U-Net)."""
    if (device or "auto") == "auto" and "torch" not in sys.modules:
        return 4  # no torch model has been loaded: whatever runs, runs on the CPU
    return 16 if resolve_device(device).startswith("cuda") else 4


def get_segmenter(model: ModelSpec, device: str | None = None) -> Segmenter:
    """The segmenter for ``model`` on ``device`` (see :func:`resolve_device`): a segmenter object
    handed in (:meth:`ModelSpec.of`) as it is, else loaded once per process and device
    (:data:`MODELS`)."""
    if model.instance is not None:
        return _placed(model.instance, model.name, check_device(device or "auto"))
    return MODELS.get(model, device)


def load_model(model: str | os.PathLike | Any, device: str | None = None, **model_args: Any) -> Segmenter:
    """A model as :func:`geoseg.predict` takes it: a checkpoint path, a shipped model's name
    (``"tankers-light"``) or ``"module:factory"`` (called with ``model_args``), loaded on
    ``device`` (default ``auto``: a GPU where there is one). Not cached: the caller owns it, and
    hands it to :func:`geoseg.predict` as ``model``."""
    spec = ModelSpec.resolve(os.fspath(model), tuple(sorted(model_args.items())))
    return load_segmenter(spec, device)


def load_segmenter(model: ModelSpec, device: str | None = None) -> Segmenter:
    """Load a segmenter from a checkpoint file or a ``module:factory`` spec (uncached), on
    ``device``: torch models move there; a model without a ``to`` method runs where it is, and
    asking it for a GPU is an error."""
    if model.is_factory:
        seg = _from_factory(model.spec, dict(model.options))
    else:
        if not os.path.exists(model.spec):
            raise ModelError(
                f"model '{model.spec}': no such checkpoint file (a factory is spelled module:callable)"
            )
        if model.options:
            raise ModelError(f"model '{model.spec}': --model-arg applies only to module:factory models")
        from geoseg.models.checkpoint import load_checkpoint

        seg = load_checkpoint(model.spec)
    check_segmenter(seg, model.spec)
    wanted = check_device(device or "auto")
    if callable(getattr(seg, "to", None)):  # a torch model: torch is loaded by now
        seg.to(resolve_device(wanted))
    elif wanted.startswith("cuda"):
        raise ModelError(f"model '{model.spec}': cannot run on {wanted} (it has no to(device) method)")
    return seg


def _placed(seg: Any, name: str, device: str) -> Any:
    """A segmenter object handed in, moved to ``device`` when one is named (``auto`` leaves it
    where its owner put it)."""
    if device == "auto":
        return seg
    if callable(getattr(seg, "to", None)):
        seg.to(device)
    elif device.startswith("cuda"):
        raise ModelError(f"model '{name}': cannot run on {device} (it has no to(device) method)")
    return seg


def _from_factory(spec: str, options: dict) -> Segmenter:
    module_name, attr = spec.split(":", 1)
    module_name = MOVED_MODULES.get(module_name, module_name)
    try:
        obj: Any = _import_from_cwd(module_name)
    except ImportError as exc:
        raise ModelError(f"model '{spec}': cannot import module '{module_name}' ({exc})") from exc
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ModelError(f"model '{spec}': module '{module_name}' has no '{attr}'") from exc
    if not callable(obj):
        raise ModelError(f"model '{spec}': '{attr}' is not callable")
    try:
        inspect.signature(obj).bind(**options)
    except TypeError as exc:
        raise ModelError(f"model '{spec}': factory rejected its arguments ({exc})") from exc
    except ValueError:  # no signature to check (some builtins): let the call decide
        pass
    try:
        return obj(**options)
    except Exception as exc:
        raise ModelError(f"model '{spec}': factory failed ({type(exc).__name__}: {exc})") from exc


#: factory modules that moved, under the names job files written before may still use
MOVED_MODULES = {"geoseg.plugins": "geoseg.models.plugins"}


def _import_from_cwd(module_name: str):
    """Import ``module_name``; like ``python -m``, a user's module in the working directory is
    found. The working directory is on ``sys.path`` only while the import runs."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def check_segmenter(seg: Any, spec: str) -> None:
    """Raise ModelError unless ``seg`` follows the contract."""
    missing = [a for a in ("task", "classes", "in_channels", "predict") if not hasattr(seg, a)]
    if missing:
        raise ModelError(f"model '{spec}': returned object lacks {', '.join(missing)}")
    if seg.task not in TASKS:
        raise ModelError(f"model '{spec}': task must be one of {TASKS}, got {seg.task!r}")
    if not isinstance(seg.in_channels, int) or seg.in_channels < 1:
        raise ModelError(f"model '{spec}': in_channels must be a positive int")
    if len(seg.classes) < 1:
        raise ModelError(f"model '{spec}': classes is empty")


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of a NumPy array or a torch tensor (on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
