"""Real speech for tests and benchmarks, and media writers that need only PyAV.

The speech is Debian's Asterisk prompts (package asterisk-core-sounds-en-wav):
8 kHz recordings of one human voice with a transcript of each in
core-sounds-en.txt.gz. `clear_prompts` picks the ones whose transcript is what
is said; `build_long_recording` strings them together, with silence between,
into a recording of any length with its reference transcript and the time of
every prompt in it.

Every writer encodes with PyAV (libav* inside the wheel), never the ffmpeg
command-line tool, which test machines need not have; `write_float_wav`
writes its bytes itself, so NaN and infinities reach the file as they are.
"""

from __future__ import annotations

import gzip
import random
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import numpy.typing as npt

from common.limits import SAMPLE_RATE_HERTZ

ASTERISK_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS_PATH = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
# Canadian French (asterisk-core-sounds-fr-wav installs the voice as fr_CA_f_June;
# asterisk-core-sounds-fr carries the transcripts).
FRENCH_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
FRENCH_TRANSCRIPTS_PATH = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")

# Prompts whose transcript is not what the recording says: typos, and words
# said but not written (found by transcribing every candidate with Whisper
# tiny.en and reading the differences).
_MISTRANSCRIBED_PROMPTS = frozenset(
    {
        "conf-adminmenu-menu8",  # "umute"
        "queue-periodic-announce",  # "represenatives"
        "unidentified-no-callback",  # "Un-indentified or witheld"
        "pbx-invalid",  # the voice says "I am sorry, but that's not..."
        "pbx-invalidpark",  # "I am sorry, but there is no call..."
    }
)
# Container names callers may use for PyAV's muxer names.
_CONTAINER_FORMATS = {"mkv": "matroska", "m4a": "ipod", "mp4": "mp4", "webm": "webm", "ogg": "ogg"}
# Samples encoded per frame by the writers (bounded memory for long audio).
_BLOCK_SAMPLES = 16_384


@dataclass(frozen=True)
class Prompt:
    """One Asterisk recording and what it says."""

    # Name in the transcript list, relative to the sounds folder, without
    # extension: "hello-world", "digits/1".
    name: str
    path: Path
    text: str


class Utterance(NamedTuple):
    """Where one prompt lies in a long recording."""

    start_s: float
    end_s: float
    text: str


class LongRecording(NamedTuple):
    """Prompts strung together: 16 kHz mono samples and what they say."""

    samples: npt.NDArray[np.float32]
    # The utterances' texts in order, separated by single spaces.
    reference_text: str
    utterances: list[Utterance]


def read_transcripts(transcripts_path: Path = ASTERISK_TRANSCRIPTS_PATH) -> dict[str, str]:
    """The transcript list as {name: text}; `;` lines are comments."""
    transcripts: dict[str, str] = {}
    with gzip.open(transcripts_path, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip() or line.startswith(";"):
                continue
            name, separator, text = line.partition(":")
            if separator and name.strip() and text.strip():
                transcripts[name.strip()] = " ".join(text.split())
    return transcripts


def missing_test_recordings() -> list[Path]:
    """The recordings and transcripts the tests need that are not installed."""
    needed = (ASTERISK_SOUNDS_DIR, ASTERISK_TRANSCRIPTS_PATH, FRENCH_SOUNDS_DIR, FRENCH_TRANSCRIPTS_PATH)
    return [path for path in needed if not path.exists()]


def speech_available(
    sounds_dir: Path = ASTERISK_SOUNDS_DIR, transcripts_path: Path = ASTERISK_TRANSCRIPTS_PATH
) -> bool:
    """Whether the Asterisk recordings and their transcripts are installed."""
    return sounds_dir.is_dir() and transcripts_path.is_file()


def find_prompts(
    sounds_dir: Path = ASTERISK_SOUNDS_DIR, transcripts_path: Path = ASTERISK_TRANSCRIPTS_PATH
) -> list[Prompt]:
    """Every transcribed prompt that has a WAV file, sorted by name."""
    prompts = []
    for name, text in sorted(read_transcripts(transcripts_path).items()):
        path = sounds_dir / f"{name}.wav"
        if path.is_file():
            prompts.append(Prompt(name, path, text))
    return prompts


def is_clearly_transcribed(prompt: Prompt, min_word_count: int = 4) -> bool:
    """Whether `prompt`'s text is plain words that a listener would write the same way.

    Rejects annotations ("[beep]", "(10 seconds of silence)"), keypad symbols
    ("press *"), fragments ("... for ..."), short prompts (acronyms and single
    words say little about a recogniser) and known transcript errors.
    """
    if prompt.name in _MISTRANSCRIBED_PROMPTS:
        return False
    if re.search(r"[\[\]()<>*#@/\"]|\.\.\.|…", prompt.text):
        return False
    return len(re.findall(r"[A-Za-z0-9']+", prompt.text)) >= min_word_count


def clear_prompts(
    sounds_dir: Path = ASTERISK_SOUNDS_DIR,
    transcripts_path: Path = ASTERISK_TRANSCRIPTS_PATH,
    min_word_count: int = 4,
) -> list[Prompt]:
    """The prompts fit to score a recogniser against, sorted by name."""
    return [
        prompt
        for prompt in find_prompts(sounds_dir, transcripts_path)
        if is_clearly_transcribed(prompt, min_word_count)
    ]


def asterisk_recording(name: str, sounds_dir: Path = ASTERISK_SOUNDS_DIR) -> Path | None:
    """The WAV file of the prompt `name` ("tt-monkeys", "digits/1"), if it is installed.

    Needs only the recordings, not the transcript list.
    """
    path = sounds_dir / f"{name}.wav"
    return path if path.is_file() else None


def load_pcm16k(path: Path | str) -> npt.NDArray[np.float32]:
    """Decode the first audio stream of any media file to 16 kHz mono float32 in [-1, 1]."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HERTZ)
    blocks: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        for frame in container.decode(container.streams.audio[0]):
            blocks.extend(_mono_samples(resampled) for resampled in resampler.resample(frame))
    blocks.extend(_mono_samples(resampled) for resampled in resampler.resample(None))
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks).astype(np.float32, copy=False)


def build_long_recording(
    min_duration_s: float,
    gap_s: float = 1.0,
    prompts: Sequence[Prompt] | None = None,
    shuffle_seed: int | None = None,
) -> LongRecording:
    """String prompts together, `gap_s` of silence before each and after the last.

    Uses `prompts` (default: `clear_prompts()`) in order, or shuffled with
    `shuffle_seed`, and goes round them again until the recording lasts
    `min_duration_s`; each prompt is decoded once however often it is used.
    An utterance's times are those of its whole file, leading and trailing
    silence of the recording included.
    """
    prompts = list(clear_prompts() if prompts is None else prompts)
    if not prompts:
        raise ValueError("no prompts to build a recording from")
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(prompts)
    gap_samples = round(gap_s * SAMPLE_RATE_HERTZ)
    decoded: dict[Path, npt.NDArray[np.float32]] = {}
    spoken: list[tuple[npt.NDArray[np.float32], str]] = []
    length_samples = gap_samples  # the silence after the last prompt
    while not spoken or length_samples < min_duration_s * SAMPLE_RATE_HERTZ:
        prompt = prompts[len(spoken) % len(prompts)]
        if prompt.path not in decoded:
            decoded[prompt.path] = load_pcm16k(prompt.path)
        spoken.append((decoded[prompt.path], prompt.text))
        length_samples += gap_samples + decoded[prompt.path].size
    return join_with_silence(spoken, gap_s)


def join_prompts(
    names: Sequence[str],
    gap_s: float,
    sounds_dir: Path = ASTERISK_SOUNDS_DIR,
    transcripts_path: Path = ASTERISK_TRANSCRIPTS_PATH,
) -> LongRecording:
    """The prompts `names` ("conf-getconfno") in that order, each once, `gap_s`
    of silence before each and after the last, with their transcripts."""
    transcripts = read_transcripts(transcripts_path)
    return join_with_silence([(load_pcm16k(sounds_dir / f"{name}.wav"), transcripts[name]) for name in names], gap_s)


def join_with_silence(spoken: Sequence[tuple[npt.NDArray[np.float32], str]], gap_s: float) -> LongRecording:
    """16 kHz recordings and what each says, strung together with `gap_s` of
    silence before each and after the last."""
    gap = np.zeros(round(gap_s * SAMPLE_RATE_HERTZ), dtype=np.float32)
    pieces: list[npt.NDArray[np.float32]] = []
    utterances: list[Utterance] = []
    length_samples = 0
    for samples, text in spoken:
        start_samples = length_samples + gap.size
        pieces += [gap, samples]
        length_samples = start_samples + samples.size
        utterances.append(Utterance(start_samples / SAMPLE_RATE_HERTZ, length_samples / SAMPLE_RATE_HERTZ, text))
    pieces.append(gap)
    return LongRecording(np.concatenate(pieces), " ".join(utterance.text for utterance in utterances), utterances)


def write_wav(path: Path | str, samples: npt.NDArray[np.float32], sample_rate_hertz: int = SAMPLE_RATE_HERTZ) -> Path:
    """A 16-bit mono WAV of `samples`, taken to be at `sample_rate_hertz`."""
    return write_audio(
        path,
        samples,
        container_format="wav",
        codec="pcm_s16le",
        sample_rate_hertz=sample_rate_hertz,
        channel_count=1,
        input_sample_rate_hertz=sample_rate_hertz,
    )


def write_float_wav(
    path: Path | str, samples: npt.NDArray[np.float32], sample_rate_hertz: int = SAMPLE_RATE_HERTZ
) -> Path:
    """A mono WAV of 32-bit IEEE float `samples` (format 3, as soundfile
    writes float WAVs) at `sample_rate_hertz`, the samples as they are: an
    encoder would clip infinities and may turn NaN into 0."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    sample_bytes = 4
    fmt = struct.pack(
        "<HHIIHHH", 3, 1, sample_rate_hertz, sample_rate_hertz * sample_bytes, sample_bytes, 8 * sample_bytes, 0
    )
    fact = struct.pack("<I", len(data) // sample_bytes)
    chunks = b"".join(
        name + struct.pack("<I", len(body)) + body for name, body in ((b"fmt ", fmt), (b"fact", fact), (b"data", data))
    )
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return Path(path)


def write_audio(
    path: Path | str,
    samples: npt.NDArray[np.float32],
    container_format: str,
    codec: str,
    sample_rate_hertz: int,
    channel_count: int = 1,
    *,
    input_sample_rate_hertz: int = SAMPLE_RATE_HERTZ,
) -> Path:
    """Encode mono `samples` (at `input_sample_rate_hertz`) into an audio-only file.

    `container_format` is a PyAV muxer ("matroska", "webm", "mp3", "ipod",
    "flac", "ogg", "wav") or a file extension ("mkv", "m4a"); `codec` a PyAV
    encoder ("libopus", "aac", "libmp3lame", "flac", "pcm_s16le"). The encoder
    converts to its own sample format, `sample_rate_hertz` and `channel_count`
    (the same signal on every channel); frames are cut to its frame size.
    Lossy containers with no samples at all may not be readable back.
    """
    path = Path(path)
    with av.open(str(path), mode="w", format=_CONTAINER_FORMATS.get(container_format, container_format)) as output:
        stream = output.add_stream(codec, rate=sample_rate_hertz, layout=_layout(channel_count))
        if not isinstance(stream, av.AudioStream):
            raise ValueError(f"{codec} is not an audio encoder")
        output.start_encoding()  # writes the header even if there are no samples
        for start in range(0, samples.size, _BLOCK_SAMPLES):
            _mux_audio(output, stream, samples[start : start + _BLOCK_SAMPLES], start, input_sample_rate_hertz)
        _mux_audio(output, stream, None, samples.size, input_sample_rate_hertz)
    return path


def write_with_video(
    path: Path | str,
    samples: npt.NDArray[np.float32],
    *,
    container_format: str = "mp4",
    audio_codec: str = "aac",
    input_sample_rate_hertz: int = SAMPLE_RATE_HERTZ,
    audio_sample_rate_hertz: int = 44_100,
    audio_channel_count: int = 1,
    frame_rate_hertz: int = 10,
    width_pixels: int = 64,
    height_pixels: int = 48,
) -> Path:
    """A small moving picture (H.264, MPEG-4 Part 2 without libx264) with mono `samples` as its audio.

    `container_format` and `audio_codec` are as for `write_audio` (default:
    MP4 with AAC). The video lasts as long as the audio; the two are
    interleaved second by second as a real recording would be. FFmpeg's AAC
    encoder is the slow part (about 1 s a minute of mono 44.1 kHz on one
    core; stereo 48 kHz is three times slower), so mono is the default.
    """
    path = Path(path)
    duration_s = samples.size / input_sample_rate_hertz
    frame_count = max(1, round(duration_s * frame_rate_hertz))
    with av.open(str(path), mode="w", format=_CONTAINER_FORMATS.get(container_format, container_format)) as output:
        video = _add_video_stream(output, frame_rate_hertz, width_pixels, height_pixels)
        audio = output.add_stream(audio_codec, rate=audio_sample_rate_hertz, layout=_layout(audio_channel_count))
        if not isinstance(audio, av.AudioStream):
            raise ValueError(f"{audio_codec} is not an audio encoder")
        frame_index = 0
        for start in range(0, max(samples.size, 1), input_sample_rate_hertz):
            block = samples[start : start + input_sample_rate_hertz]
            _mux_audio(output, audio, block, start, input_sample_rate_hertz)
            block_end_s = (start + block.size) / input_sample_rate_hertz
            while frame_index < frame_count and (frame_index / frame_rate_hertz < block_end_s or block.size == 0):
                _mux_video_frame(output, video, frame_index, frame_rate_hertz)
                frame_index += 1
        _mux_audio(output, audio, None, samples.size, input_sample_rate_hertz)
        while frame_index < frame_count:
            _mux_video_frame(output, video, frame_index, frame_rate_hertz)
            frame_index += 1
        _flush_video(output, video)
    return path


def write_video_only(
    path: Path | str,
    duration_s: float = 1.0,
    *,
    frame_rate_hertz: int = 10,
    width_pixels: int = 64,
    height_pixels: int = 48,
) -> Path:
    """An MP4 with the moving picture of `write_with_video` and no audio track."""
    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as output:
        video = _add_video_stream(output, frame_rate_hertz, width_pixels, height_pixels)
        for frame_index in range(max(1, round(duration_s * frame_rate_hertz))):
            _mux_video_frame(output, video, frame_index, frame_rate_hertz)
        _flush_video(output, video)
    return path


def _mono_samples(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def _layout(channel_count: int) -> str:
    layouts = {1: "mono", 2: "stereo", 6: "5.1"}
    if channel_count not in layouts:
        raise ValueError(f"unsupported channel count {channel_count}; use one of {sorted(layouts)}")
    return layouts[channel_count]


def _mux_audio(
    output: av.container.OutputContainer,
    stream: av.AudioStream,
    block: npt.NDArray[np.float32] | None,
    offset_samples: int,
    sample_rate_hertz: int,
) -> None:
    """Encode one mono block (None: flush the encoder) and mux its packets.

    The block is copied onto every channel of the stream, at full level: an
    encoder's own up-mix would lower it, or put it in the centre channel only.
    """
    frame = None
    if block is not None:
        if block.size == 0:
            return
        clipped = np.clip(block, -1.0, 1.0).astype(np.float32)
        interleaved = np.repeat(clipped, stream.layout.nb_channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout=stream.layout.name)
        frame.sample_rate = sample_rate_hertz
        frame.pts = offset_samples
        frame.time_base = Fraction(1, sample_rate_hertz)
    for packet in stream.encode(frame):
        output.mux(packet)


def _add_video_stream(
    output: av.container.OutputContainer, frame_rate_hertz: int, width_pixels: int, height_pixels: int
) -> av.VideoStream:
    """An H.264 stream, or MPEG-4 Part 2 where PyAV was built without libx264."""
    video_codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = output.add_stream(video_codec, rate=frame_rate_hertz)
    assert isinstance(stream, av.VideoStream)
    stream.width = width_pixels
    stream.height = height_pixels
    stream.pix_fmt = "yuv420p"
    return stream


def _mux_video_frame(
    output: av.container.OutputContainer, stream: av.VideoStream, frame_index: int, frame_rate_hertz: int
) -> None:
    """A grey picture with a white bar that moves one column a frame."""
    image = np.full((stream.height, stream.width, 3), 64, dtype=np.uint8)
    column = frame_index % stream.width
    image[:, column : column + 4] = 255
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = frame_index
    frame.time_base = Fraction(1, frame_rate_hertz)
    for packet in stream.encode(frame):
        output.mux(packet)


def _flush_video(output: av.container.OutputContainer, stream: av.VideoStream) -> None:
    for packet in stream.encode(None):
        output.mux(packet)
