"""Reading what the CLI is given and writing what it produces, safely.

- Model definitions: "MODULE:CLASS" imports a module the user named (code they chose to run) or a .py file;
  "torchvision:NAME" builds torchvision.models.NAME(weights=None, ...), never downloading anything.
- Weights: .safetensors through safetensors, .pt/.pth/.bin through torch.load(weights_only=True). Nothing
  stored in a checkpoint is ever executed: a pickled module or any other Python object is refused.
- Data: an .npz or a directory (x.npy + y.npy, or one sub-folder of images per class).
- Outputs: written atomically (a temporary file in the destination's directory, fsync, os.replace), so a
  failure at any point leaves either the previous file or nothing, never a partial one.

Every problem with what the user gave raises ValueError / TypeError / FileNotFoundError naming the file
and the problem; the CLI turns those into exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DATA_FORMATS",
    "IMAGE_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "LoadedData",
    "atomic_write",
    "atomic_write_bytes",
    "build_model",
    "load_config_file",
    "load_data",
    "load_weights",
    "parse_model_kwargs",
    "read_state_dict",
    "save_weights",
]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DATA_FORMATS = "an .npz with arrays x [N, C, H, W] and y [N]; a directory with x.npy and y.npy; or a directory " \
    "with one sub-folder of images per class"
# Keys under which training scripts commonly nest the state dict of a checkpoint.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


# ---------------------------------------------------------------------------------------------------- models


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """The --model-kwargs JSON object as a dict ({} for None/empty)."""
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return kwargs


def build_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """An untrained model from "MODULE:CLASS", "path/to/file.py:CLASS" or "torchvision:NAME".

    MODULE is imported (it is the user's own code); CLASS may be dotted ("zoo.resnets:Builder.small") and may
    be a class or a factory function; it is called with `kwargs` and must return an nn.Module.
    "torchvision:NAME" calls torchvision.models.get_model(NAME, weights=None, **kwargs): no weights are
    downloaded, ever; load yours with load_weights().
    """
    kwargs = dict(kwargs or {})
    module_name, sep, attribute = spec.rpartition(":")  # rpartition: a Windows path may hold a colon
    if not sep or not module_name or not attribute:
        raise ValueError(f"--model-def must look like MODULE:CLASS, path/to/file.py:CLASS or torchvision:NAME, "
                         f"got {spec!r}")
    if module_name == "torchvision":
        return _build_torchvision(attribute, kwargs)
    factory = _resolve_attribute(_import_user_module(module_name), attribute, spec)
    if not callable(factory):
        raise TypeError(f"--model-def {spec!r} names a {type(factory).__name__}, not a class or function")
    try:
        model = factory(**kwargs)
    except TypeError as exc:  # wrong keyword arguments, the commonest mistake
        raise TypeError(f"--model-def {spec!r} rejected --model-kwargs {kwargs}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"--model-def {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_user_module(name: str):
    """The module `name` (dotted, found on sys.path or in the working directory) or a .py file, imported."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--model-def file {name} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"awm_fast_user_model_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"--model-def cannot import {name}")
        module = importlib.util.module_from_spec(module_spec)

        def load():
            module_spec.loader.exec_module(module)
            return module
    else:
        # Like `python -m`, let the current directory's modules be found.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        load = functools.partial(importlib.import_module, name)
    try:
        return load()
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):  # the module itself is missing
            raise ValueError(f"--model-def: no module named {name!r} (is it on PYTHONPATH, or give a .py path?)") \
                from None
        raise ValueError(f"--model-def: importing {name} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the user's module is broken: their input, not our failure
        raise ValueError(f"--model-def: importing {name} failed: {type(exc).__name__}: {exc}") from exc


def _resolve_attribute(module, attribute: str, spec: str):
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--model-def {spec!r}: {getattr(target, '__name__', target)!r} has no attribute "
                             f"{part!r}")
        target = getattr(target, part)
    return target


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models

    for key in ("weights", "weights_backbone", "pretrained", "pretrained_backbone"):
        if kwargs.get(key) not in (None, False):
            raise ValueError(f"--model-kwargs sets {key}={kwargs[key]!r}: awm-fast never downloads weights; "
                             "pass your checkpoint with --weights")
        kwargs.pop(key, None)
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        raise ValueError(f"torchvision:{name} is not a torchvision classification model; choose one of "
                         f"{', '.join(classifiers[:8])}, ... (torchvision.models.list_models())")
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as exc:
        raise TypeError(f"torchvision:{name} rejected --model-kwargs {kwargs}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------- weights


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file on the CPU, without executing anything stored in it.

    .safetensors: safetensors.torch.load_file. .pt/.pth/.bin: torch.load(weights_only=True), which unpickles
    only tensors and plain containers; a state dict nested under "state_dict", "model", ... is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"weights file {path}: unknown format {suffix or '(no suffix)'}; expected one of "
                         f"{', '.join(WEIGHT_SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"weights file {path} is not a readable .safetensors file: {_one_line(exc)}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (a pickled object), RuntimeError (not a torch file), EOFError...
        raise ValueError(f"weights file {path} cannot be loaded as weights only ({type(exc).__name__}): save "
                         "model.state_dict() (awm-fast never unpickles Python objects) - "
                         f"{_one_line(exc)[:200]}") from None
    return _state_dict_of(loaded, path)


def _state_dict_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        for key in _NESTED_STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return _state_dict_of(loaded[key], path)
    if not isinstance(loaded, Mapping) or not loaded:
        raise ValueError(f"weights file {path} holds a {type(loaded).__name__}, not a state dict "
                         "{parameter name: tensor}")
    state = {}
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise ValueError(f"weights file {path}: state dict key {key!r} is not a string")
        if isinstance(value, torch.Tensor):
            state[key] = value
        elif not key.endswith("_extra_state"):
            raise ValueError(f"weights file {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return state


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint into `model` strictly (every key, every shape); returns the model.

    A "module." prefix (nn.DataParallel / DDP checkpoints) is stripped when the model's keys lack it.
    Raises ValueError listing missing, unexpected and mis-shaped entries, before anything is copied.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    if not set(state) & set(expected) and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mis_shaped:
        problems = [f"{label} {len(items)} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                    for label, items in (("missing", missing), ("unexpected", unexpected),
                                         ("mis-shaped", mis_shaped)) if items]
        raise ValueError(f"weights file {path} does not fit the model {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict atomically as .safetensors (default) or .pt; returns the path.

    Tensors are copied to the CPU; entries sharing storage (tied weights) are written as separate copies, so
    the file loads strictly with load_weights.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"output {path}: unknown format {suffix or '(no suffix)'}; use .safetensors or .pt")
    # Fresh CPU copies: nothing aliases the caller's tensors or another entry (safetensors refuses aliases).
    state = {key: value.detach().to("cpu", copy=True).contiguous()
             for key, value in state_dict.items() if isinstance(value, torch.Tensor)}  # skips _extra_state objects
    if suffix == ".safetensors":
        from safetensors.torch import save

        metadata = {"format": "pt", "producer": "awm_fast"}
        atomic_write_bytes(path, save(state, metadata=metadata))
    else:
        atomic_write(path, lambda handle: torch.save(state, handle))
    return path


# ---------------------------------------------------------------------------------------------------- atomic IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call write(handle) on a temporary file beside `path`, fsync it, then rename it over `path`.

    The rename is atomic on POSIX and Windows (os.replace): readers see the old file or the complete new one.
    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    # O_EXCL on a fresh name in the same directory (same filesystem, so the rename is atomic); mode 0o666 lets
    # the umask decide the permissions, as for any file the user writes.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


# ---------------------------------------------------------------------------------------------------- config


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The AWMConfig overrides of a .yaml/.yml/.json file: a mapping {field: value} (lists become tuples)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            loaded = yaml.safe_load(text)  # safe_load: plain data only, no Python object tags
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path}: invalid YAML ({_one_line(exc)})") from None
    else:
        raise ValueError(f"config file {path}: unknown format {suffix or '(no suffix)'}; use .yaml, .yml or .json")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of AWMConfig options, got a {type(loaded).__name__}")
    return {str(k): tuple(v) if isinstance(v, list) and k == "input_bounds" else v for k, v in loaded.items()}


# ---------------------------------------------------------------------------------------------------- data


class LoadedData:
    """x float32 [N, C, H, W], y int64 [N], and where they came from (class names for image folders)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, source: str, classes: list[str] | None = None) -> None:
        self.x, self.y, self.source, self.classes = x, y, source, classes

    def describe(self) -> dict[str, Any]:
        return {"path": self.source, "samples": int(self.x.shape[0]), "shape": list(self.x.shape[1:]),
                "classes": self.classes if self.classes is not None else sorted(set(self.y.tolist()))}


def load_data(path: str | os.PathLike, progress: Callable | None = None) -> LoadedData:
    """A labelled image set from `path` (see DATA_FORMATS); uint8 images are scaled by 1/255.

    x must be [N, C, H, W] ([N, H, W] is taken as one channel) float or uint8; y integer [N]. Values are
    checked by purify (NaN, bounds, labels). `progress`, if given, wraps the iterable of image files.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data {path} does not exist; expected {DATA_FORMATS}")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            suffix = path.suffix or "(no suffix)"
            raise ValueError(f"data file {path}: unknown format {suffix}; expected {DATA_FORMATS}")
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"data file {path} is not a readable .npz: {_one_line(exc)}") from None
        with archive:
            if "x" not in archive.files or "y" not in archive.files:
                raise ValueError(f"data file {path}: expected arrays 'x' and 'y', found {sorted(archive.files)}")
            x, y = _read_array(archive, "x", path), _read_array(archive, "y", path)
        return LoadedData(*_to_tensors(x, y, path), str(path))
    if (path / "x.npy").is_file() and (path / "y.npy").is_file():
        x = _read_npy(path / "x.npy")
        y = _read_npy(path / "y.npy")
        return LoadedData(*_to_tensors(x, y, path), str(path))
    return _load_image_folder(path, progress)


def _read_array(archive, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as exc:  # object arrays need pickle, which stays off
        raise ValueError(f"data file {path}: array {name!r} cannot be read without pickle ({_one_line(exc)})") \
            from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"data file {path} is not a readable .npy array: {_one_line(exc)}") from None


def _to_tensors(x: np.ndarray, y: np.ndarray, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"data {path}: x must be images [N, C, H, W] (or [N, H, W]), got shape {x.shape}")
    if x.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise TypeError(f"data {path}: x must be float or uint8 images, got {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):  # bool is not a subtype of np.integer
        raise TypeError(f"data {path}: labels y must be integers, got {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"data {path}: labels y must have shape [N], got {tuple(y.shape)}")
    return images, torch.from_numpy(y.astype(np.int64))


def _load_image_folder(root: Path, progress: Callable | None) -> LoadedData:
    """root/<class>/<image>: classes sorted by name (by value when every name is an integer, which is the label)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(d, sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for d in class_dirs]
    files = [(d, fs) for d, fs in files if fs]
    if not files:
        raise ValueError(f"data directory {root} holds neither x.npy + y.npy nor class sub-folders of images "
                         f"({', '.join(IMAGE_SUFFIXES)}); expected {DATA_FORMATS}")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        raise ValueError("reading a folder of images needs Pillow (pip install pillow); or pass an .npz") from None
    names = [d.name for d, _ in files]
    numeric = all(name.isdigit() for name in names)
    if numeric:
        files.sort(key=lambda item: int(item[0].name))
    labels_of = {d: int(d.name) if numeric else index for index, (d, _) in enumerate(files)}
    items = [(image, labels_of[d]) for d, fs in files for image in fs]
    iterable = progress(items) if progress is not None else items
    images, labels, modes = [], [], set()
    for image_path, label in iterable:
        try:
            with Image.open(image_path) as image:
                image.load()
                modes.add("L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB")
                images.append(image.copy())
        except OSError as exc:
            raise ValueError(f"image {image_path} cannot be read: {_one_line(exc)}") from None
        labels.append(label)
    mode = "L" if modes == {"L"} else "RGB"  # all grayscale: one channel; otherwise three
    arrays = []
    for image_path, image in zip((p for p, _ in items), images, strict=True):
        array = np.asarray(image.convert(mode), dtype=np.uint8)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(f"image {image_path} is {array.shape[1]}x{array.shape[0]} but the first image is "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; resize the images to one size first")
        arrays.append(array)
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    class_names = [d.name for d, _ in files]
    return LoadedData(*_to_tensors(x, np.asarray(labels), root), str(root),
                      None if numeric else class_names)


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
