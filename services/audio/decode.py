"""Decoding any audio or video file into 16 kHz mono float32 samples.

PyAV (FFmpeg) demuxes the file packet by packet, decodes, and resamples
(`av.AudioResampler`, libswresample) each frame to the target rate and to
one channel, so the file is read once and never held in memory; only the
decoded samples are, as a list of chunks the caller copies once into their
final place (`DecodedAudio.chunks`), or handed block by block to a `sink`
that writes them there as they come (the audio service's shared memory), so
they are never held twice. Channels are down-mixed with FFmpeg's
matrix, normalised so the result never exceeds full scale (stereo becomes
the mean of its two channels). A WAV file already in the target form
(16-bit PCM, one channel, the target rate) is read block by block with the
standard library's `wave` instead: the same values, a tenth of the time.
Samples that are not finite numbers (NaN or infinite, as a damaged float
stream holds) are made silent, whichever reader decoded them, and counted
in the log: Whisper turns them into babble.

What counts as an error (all raised as `common.errors` types):

* missing file: `NotFoundError`;
* a file the service's user may not read: `PermissionDeniedError`;
* a path the system cannot follow (a loop of symbolic links, a name too
  long): `InvalidInputError` with the system's reason;
* not a media file, a container FFmpeg cannot open (e.g. an MP4 cut before
  its moov atom), or a file whose every audio packet fails to decode:
  `InvalidInputError` with FFmpeg's reason;
* no audio stream (a video-only file): `InvalidInputError`;
* longer than `DecodeOptions.max_duration_s`: `ResourceExhaustedError`,
  raised as soon as the container header or the decoded samples pass the
  limit, without decoding the rest.

A file cut off midway (an interrupted download) whose container FFmpeg can
still open decodes up to the cut, as ffmpeg does, with a warning in the log;
isolated undecodable packets are skipped the same way. Zero-length audio is
valid and yields 0 samples.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.container
import av.error
import numpy as np
import numpy.typing as npt

from common.errors import (
    CancelledError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SuiteError,
)
from common.limits import SAMPLE_RATE_HERTZ

logger = logging.getLogger(__name__)


# A container header may round or estimate its duration (e.g. VBR MP3 without
# a Xing header), so it is trusted to reject a file early only when it is
# clearly over the limit; the exact check is on the decoded samples.
_HEADER_DURATION_TOLERANCE = 1.02


# Containers of one media file each (FFmpeg demuxer names; "mov" covers mp4,
# m4a, 3gp, "matroska" covers webm).
DEFAULT_DEMUXERS: tuple[str, ...] = (
    "aac", "ac3", "aiff", "amr", "amrnb", "amrwb", "ape", "asf", "au", "avi", "caf", "dts", "dv", "eac3",
    "flac", "flv", "gsm", "loas", "matroska", "mov", "mp3", "mpc", "mpc8", "mpeg", "mpegts", "mxf", "nut",
    "ogg", "rm", "tak", "truehd", "tta", "voc", "w64", "wav", "wv", "xwma",
)  # fmt: skip
# FFmpeg protocols a path may be opened with: the local file, nothing else
# (no concat:, http:, tcp:, ...), also for what a container refers to.
ALLOWED_PROTOCOLS = "file"


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode."""

    # Rate of the decoded samples.
    sample_rate_hertz: int = SAMPLE_RATE_HERTZ
    # Longest audio accepted (4 h); longer input fails early.
    max_duration_s: float = 4 * 3600.0
    # FFmpeg demuxers a file may be read with (FFmpeg's format_whitelist):
    # containers of one file only. Playlists and lists of other files (HLS,
    # DASH, concat, image sequences) are refused: they would read files or
    # addresses outside the media root, or refer to themselves for ever.
    allowed_demuxers: tuple[str, ...] = DEFAULT_DEMUXERS


@dataclass(frozen=True)
class SourceDescription:
    """What the decoder found in the source."""

    # FFmpeg's name of the container format, e.g. "mov,mp4,m4a,3gp,3g2,mj2".
    container_format: str
    # Codec of the decoded audio stream, e.g. "aac", "pcm_s16le".
    codec: str
    # Rate and channels of the audio stream before resampling and down-mixing.
    source_sample_rate_hertz: int
    source_channel_count: int
    # Size of the file.
    size_bytes: int


# Takes each block of decoded samples in turn; it copies them (the block's array is reused).
SampleSink = Callable[[npt.NDArray[np.float32]], None]


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded mono float32 samples, as consecutive chunks (none when a
    `SampleSink` took them)."""

    chunks: tuple[npt.NDArray[np.float32], ...]
    sample_count: int
    sample_rate_hertz: int
    source: SourceDescription
    decode_duration_s: float

    @property
    def duration_s(self) -> float:
        return self.sample_count / self.sample_rate_hertz

    def samples(self) -> npt.NDArray[np.float32]:
        """All samples in one array (a copy; the chunks stay as they are); empty when a sink took them."""
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.chunks)


def decode_file(
    path: Path,
    options: DecodeOptions | None = None,
    *,
    cancel_event: threading.Event | None = None,
    display_name: str | None = None,
    sink: SampleSink | None = None,
) -> DecodedAudio:
    """Decode the best audio stream of the file at `path` (see module doc).

    `cancel_event`, when set by another thread, stops decoding at the next
    packet with `CancelledError`. `display_name` names the file in messages
    (default: its file name), e.g. the client's name of an uploaded file.
    `sink`, when given, takes the samples block by block as they are
    decoded, and the result holds no chunks (its `sample_count` says how
    many there were); a failure may come after some blocks went to it.
    """
    options = options or DecodeOptions()
    name = display_name or path.name
    started = time.perf_counter()
    try:
        size_bytes = path.stat().st_size
    except OSError as error:
        raise _unopenable(error, name) from None
    if not path.is_file():
        raise InvalidInputError(f"not a regular file: {name}")
    plain = _decode_plain_wav(path, name, size_bytes, options, cancel_event, started, sink)
    if plain is not None:
        return plain
    try:
        # An absolute path, so FFmpeg never reads it as a protocol ("concat:"),
        # and only single-file containers over the file protocol.
        container = av.open(
            str(path.absolute()),
            mode="r",
            metadata_errors="ignore",
            container_options={
                "format_whitelist": ",".join(options.allowed_demuxers),
                "protocol_whitelist": ALLOWED_PROTOCOLS,
            },
        )
    except av.error.FileNotFoundError:
        raise NotFoundError(f"no such file: {name}") from None
    except av.error.PermissionError:
        raise PermissionDeniedError(f"the audio service may not read {name}: permission denied") from None
    except av.error.ArgumentError as error:
        # What FFmpeg says when the detected format is not allowed.
        raise InvalidInputError(
            f"{name} is not a media file the audio service reads (a playlist or a list of other files is not; "
            f"containers of one file are: {', '.join(options.allowed_demuxers)}): {_reason(error)}"
        ) from error
    except av.error.FFmpegError as error:
        raise InvalidInputError(f"{name} is not a readable media file: {_reason(error)}") from error
    with container:
        return _decode_container(container, name, size_bytes, options, cancel_event, started, sink)


def _decode_plain_wav(
    path: Path,
    name: str,
    size_bytes: int,
    options: DecodeOptions,
    cancel_event: threading.Event | None,
    started: float,
    sink: SampleSink | None = None,
) -> DecodedAudio | None:
    """A WAV file of 16-bit PCM, one channel, at the target rate (what many
    users convert their audio to) read straight into samples: the same
    values FFmpeg gives (sample / 32768), about ten times as fast as frame
    by frame. None for anything else, FFmpeg's to decode (and to judge):
    other formats, rates, channels or sample sizes, a header the standard
    library does not read, or one that says the audio is over the limit."""
    if "wav" not in options.allowed_demuxers:
        return None
    try:
        reader = wave.open(str(path), "rb")  # noqa: SIM115 - closed by the with below; only its opening may fail
    except (wave.Error, EOFError):
        return None  # not RIFF/WAVE, not PCM, or a header cut short
    except OSError as error:
        raise _unopenable(error, name) from None  # e.g. a file its owner may read and this service may not
    with reader:
        layout = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        if layout != (1, 2, options.sample_rate_hertz):
            return None
        max_samples = int(options.max_duration_s * options.sample_rate_hertz)
        if reader.getnframes() > max_samples * _HEADER_DURATION_TOLERANCE:
            return None  # FFmpeg's header check says so (or reads a streamed WAV's unknown length)
        blocks = _SampleBlocks(sink=sink)
        # A file cut short gives what is there, as FFmpeg does.
        while data := reader.readframes(_BLOCK_SAMPLES):
            if cancel_event is not None and cancel_event.is_set():
                raise CancelledError(f"decoding of {name} was cancelled")
            pcm = np.frombuffer(data, dtype="<i2", count=len(data) // 2)
            blocks.append(pcm.astype(np.float32) / np.float32(32768.0))
            if blocks.sample_count > max_samples:
                raise ResourceExhaustedError(_too_long_message(name, None, options))
    source = SourceDescription("wav", "pcm_s16le", options.sample_rate_hertz, 1, size_bytes)
    return _decoded(name, blocks, source, options, started, "read directly")


def _decode_container(
    container: av.container.InputContainer,
    name: str,
    size_bytes: int,
    options: DecodeOptions,
    cancel_event: threading.Event | None,
    started: float,
    sink: SampleSink | None = None,
) -> DecodedAudio:
    if not container.streams.audio:
        found = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "no streams"
        raise InvalidInputError(f"{name} has no audio stream (found {found})")
    best = container.streams.best("audio")
    stream = best if isinstance(best, av.AudioStream) else container.streams.audio[0]
    codec_context = stream.codec_context
    source = SourceDescription(
        container_format=container.format.name,
        codec=codec_context.name,
        source_sample_rate_hertz=int(codec_context.sample_rate or 0),
        source_channel_count=int(codec_context.channels or 0),
        size_bytes=size_bytes,
    )
    max_samples = int(options.max_duration_s * options.sample_rate_hertz)
    header_duration_s = _header_duration_s(container, stream)
    if header_duration_s is not None and header_duration_s > options.max_duration_s * _HEADER_DURATION_TOLERANCE:
        raise ResourceExhaustedError(_too_long_message(name, header_duration_s, options))

    # rematrix_maxval=1 normalises FFmpeg's down-mix matrix so the mono output
    # never exceeds full scale (stereo becomes the mean of its channels; 5.1
    # summed unnormalised would peak at 1.7 times the input).
    resampler = av.AudioResampler(
        format="flt",
        layout="mono",
        rate=options.sample_rate_hertz,
        options={"rematrix_maxval": "1.0"},
    )
    blocks = _SampleBlocks(sink=sink)
    bad_packet_count = 0
    first_bad_reason = ""

    def keep(frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            blocks.append(frame.to_ndarray().reshape(-1))
        if blocks.sample_count > max_samples:
            raise ResourceExhaustedError(_too_long_message(name, None, options))

    try:
        for packet in container.demux(stream):
            if cancel_event is not None and cancel_event.is_set():
                raise CancelledError(f"decoding of {name} was cancelled")
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError as error:
                bad_packet_count += 1
                first_bad_reason = first_bad_reason or _reason(error)
                continue
            for frame in frames:
                keep(resampler.resample(frame))
        keep(resampler.resample(None))
    except av.error.FFmpegError as error:
        # The demuxer itself failed midway: the file is damaged past this point.
        if blocks.sample_count == 0:
            raise InvalidInputError(f"{name} could not be decoded: {_reason(error)}") from error
        logger.warning(
            "%s is damaged after %.1f s of audio, keeping what decoded: %s",
            name,
            blocks.sample_count / options.sample_rate_hertz,
            _reason(error),
        )
    if bad_packet_count:
        if blocks.sample_count == 0:
            raise InvalidInputError(f"{name} could not be decoded: {first_bad_reason}")
        logger.warning("%s: skipped %d undecodable packets (%s)", name, bad_packet_count, first_bad_reason)
    return _decoded(name, blocks, source, options, started)


def _decoded(
    name: str, blocks: _SampleBlocks, source: SourceDescription, options: DecodeOptions, started: float, how: str = ""
) -> DecodedAudio:
    """The decoded audio of `blocks`, logged (`how`: how it was read, when not by FFmpeg)."""
    if blocks.non_finite_count:
        logger.warning(
            "%s: %d samples were not finite numbers (NaN or infinite); made silent", name, blocks.non_finite_count
        )
    decoded = DecodedAudio(
        chunks=blocks.finish(),
        sample_count=blocks.sample_count,
        sample_rate_hertz=options.sample_rate_hertz,
        source=source,
        decode_duration_s=time.perf_counter() - started,
    )
    logger.info(
        "decoded %s (%s/%s, %d Hz, %d ch%s): %.1f s of audio in %.2f s",
        name,
        source.container_format,
        source.codec,
        source.source_sample_rate_hertz,
        source.source_channel_count,
        f", {how}" if how else "",
        decoded.duration_s,
        decoded.decode_duration_s,
    )
    return decoded


# Samples of one block of decoded audio.
_BLOCK_SAMPLES = 1 << 18


class _SampleBlocks:
    """Gathers the decoder's small frames (a few hundred samples each) into
    blocks of `block_samples`, so hours of audio are a few hundred arrays,
    not a million, and copying them into shared memory is quick; with a
    `sink`, each full block goes to it and its array is reused, so only one
    block is ever held. Every reader's samples pass through here, so here NaN
    and infinite samples are made silent (and counted in `non_finite_count`)."""

    def __init__(self, block_samples: int = _BLOCK_SAMPLES, sink: SampleSink | None = None) -> None:
        self._block_samples = block_samples
        self._sink = sink
        self._blocks: list[npt.NDArray[np.float32]] = []
        self._current = np.empty(block_samples, dtype=np.float32)
        self._filled = 0
        self.sample_count = 0
        self.non_finite_count = 0

    def append(self, samples: npt.NDArray[Any]) -> None:
        finite = np.isfinite(samples)
        if not finite.all():
            self.non_finite_count += samples.size - int(np.count_nonzero(finite))
            samples = np.where(finite, samples, np.float32(0.0))
        while samples.size:
            taken = min(self._block_samples - self._filled, samples.size)
            self._current[self._filled : self._filled + taken] = samples[:taken]
            self._filled += taken
            self.sample_count += taken
            samples = samples[taken:]
            if self._filled == self._block_samples:
                if self._sink is not None:
                    self._sink(self._current)
                else:
                    self._blocks.append(self._current)
                    self._current = np.empty(self._block_samples, dtype=np.float32)
                self._filled = 0

    def finish(self) -> tuple[npt.NDArray[np.float32], ...]:
        """The blocks, the last one trimmed (copied, so the rest is freed);
        none with a sink, which has taken them all."""
        if self._filled and self._sink is not None:
            self._sink(self._current[: self._filled])
        elif self._filled:
            self._blocks.append(self._current[: self._filled].copy())
        self._current = np.empty(0, dtype=np.float32)
        self._filled = 0
        return tuple(self._blocks)


def _header_duration_s(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """Duration the container header claims for the stream, if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _too_long_message(name: str, header_duration_s: float | None, options: DecodeOptions) -> str:
    what = f"{header_duration_s:.1f} s long" if header_duration_s is not None else "longer than the limit"
    return (
        f"{name} is {what}; the maximum duration of audio this service decodes is "
        f"{options.max_duration_s:g} s: cut the file into parts"
    )


def _unopenable(error: OSError, name: str) -> SuiteError:
    """What a caller is told when the file `name` cannot be opened (or stat'ed)."""
    if isinstance(error, FileNotFoundError):
        return NotFoundError(f"no such file: {name}")
    if isinstance(error, PermissionError):
        return PermissionDeniedError(
            f"the audio service may not read {name}: permission denied (the file or a folder above it is not "
            "readable by the user the service runs as)"
        )
    if error.errno == errno.ENOTDIR:
        return NotFoundError(f"no such file: {name} (a part of its path is a file, not a folder)")
    reason = error.strerror or type(error).__name__
    if error.errno == errno.ELOOP:
        reason += " (a symbolic link that leads back to itself)"
    return InvalidInputError(f"{name} cannot be opened: {reason}")


def _reason(error: av.error.FFmpegError) -> str:
    """FFmpeg's own words, without the file name PyAV appends."""
    reason = error.strerror or str(error)
    if isinstance(error, av.error.EOFError):
        reason += " (the file ends too early: truncated?)"
    return reason
