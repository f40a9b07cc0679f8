"""Realistic bench media: continuous speech, music and noise, with its reference.

The prompt recording of `tests.speech.build_long_recording` is speech with a
second of silence between prompts: a recogniser and a VAD have an easy time
with it, and costs that grow with density (a chunk full of words to time, a
coverage check that looks twice) hardly show. This module builds, once per
`MediaOptions` and then from its on-disk cache, a recording closer to what
users upload:

- continuous speech in stretches of one to two minutes that take turns: a
  woman's human recordings (Debian's Asterisk prompts, CC-BY-SA-3.0, the
  transcripts of `tests.speech`) and a man's synthetic voice (piper's joe,
  CC0, `tests.voices.joe_says`) reading the prose of `bench.reading` sentence
  by sentence; within a stretch the utterances are trimmed of their own
  silence and follow each other after 0.05-0.25 s, as in fluent speech;
- about 20 s of real music (Asterisk's music on hold, package
  asterisk-moh-opsound-wav, CC-BY-SA-3.0) with no words in the reference;
- a stretch of speech over pink noise at 12 dB SNR.

Every utterance's start and end are known (`SpokenUtterance`), so the
reference transcript is exact and `cut_clips` cuts clips of continuous speech
between utterances, that is at word boundaries, each with its own reference.
The recording is written as a 16 kHz WAV and as an MP4 (a small video track
and 48 kHz stereo AAC, like a phone's video). The same options and seed give
the same samples; the cache key covers the options, the prose and
`MEDIA_VERSION`.

    python -m bench.media            # build (or find) it and describe it
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.reading import READING_TEXT, reading_sentences
from tests.speech import SAMPLE_RATE_HERTZ, clear_prompts, load_pcm16k, write_wav, write_with_video

# Bump when the build writes something different for the same options: the cache key includes it.
MEDIA_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/subtitler/bench-media").expanduser()
MUSIC_ON_HOLD_DIR = Path("/usr/share/asterisk/moh")

Samples = npt.NDArray[np.float32]

# What a passage holds (`Passage.kind`).
SPEECH = "speech"
NOISY_SPEECH = "speech over noise"
MUSIC = "music"
# The two voices (`Passage.voice`): Allison of the Asterisk prompts, piper's joe.
HUMAN_VOICE = "allison (human)"
SYNTHETIC_VOICE = "joe (piper)"

# Silence trimming: a 10 ms frame is sound when its RMS is within this many dB
# of the recording's loudest frame; this much is kept either side of the sound.
_TRIM_BELOW_PEAK_DB = 40.0
_TRIM_MARGIN_S = 0.03
_FRAME_S = 0.01
_MUSIC_FADE_S = 1.0
# Silence either side of the music, and noise before and after the noisy stretch's speech.
_MUSIC_PAUSE_S = 0.6
_NOISE_LEAD_S = 1.0
# A clip keeps this much of the gap either side of its speech (at most half the gap).
_CLIP_PAD_S = 0.1


@dataclass(frozen=True)
class MediaOptions:
    """What the realistic recording is made of; each field is part of the cache key."""

    seed: int = 7
    # Speech in all, the noisy stretch included (the music comes on top).
    speech_s: float = 600.0
    # Each stretch of one voice lasts between these (the last may be shorter).
    stretch_min_s: float = 60.0
    stretch_max_s: float = 120.0
    # Pause between two utterances of a stretch (fluent speech).
    gap_min_s: float = 0.05
    gap_max_s: float = 0.25
    # Pause where the voices take turns.
    turn_gap_min_s: float = 0.3
    turn_gap_max_s: float = 0.7
    # Speech level (RMS of the utterances, trimmed); each stretch is moved by up to ±`level_spread_db`.
    speech_level_dbfs: float = -20.0
    level_spread_db: float = 3.0
    # The music passage: a stretch of one music-on-hold track, faded in and out, after stretch `music_after_stretch`.
    music_path: str = str(MUSIC_ON_HOLD_DIR / "macroform-robot_dity.wav")
    music_offset_s: float = 30.0
    music_s: float = 20.0
    music_level_dbfs: float = -22.0
    music_after_stretch: int = 2
    # Stretch `noisy_stretch` (counted from 0) lasts `noisy_s` and lies over pink noise at `noise_snr_db`.
    noisy_stretch: int = 4
    noisy_s: float = 60.0
    noise_snr_db: float = 12.0

    @classmethod
    def of_length(cls, speech_s: float) -> MediaOptions:
        """The default layout (music after the second stretch, noise under the
        fifth) at `speech_s` of speech: the stretches scaled with it; the
        defaults themselves at 600 s."""
        default = cls()
        scale = speech_s / default.speech_s
        return dataclasses.replace(
            default,
            speech_s=float(speech_s),
            stretch_min_s=default.stretch_min_s * scale,
            stretch_max_s=default.stretch_max_s * scale,
            noisy_s=default.noisy_s * scale,
        )


@dataclass(frozen=True)
class SpokenUtterance:
    """One prompt or sentence in the recording, its sound trimmed of silence."""

    start_s: float
    end_s: float
    text: str
    # "asterisk:<prompt name>" or "joe".
    source: str
    noisy: bool = False


@dataclass(frozen=True)
class Passage:
    """A stretch of one kind: one voice's speech (clean or over noise) or music."""

    kind: str
    # HUMAN_VOICE or SYNTHETIC_VOICE; "" for music.
    voice: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class BenchMedia:
    """The recording on disk and what it holds."""

    wav_path: Path
    mp4_path: Path
    duration_s: float
    utterances: tuple[SpokenUtterance, ...]
    passages: tuple[Passage, ...]

    @property
    def reference_text(self) -> str:
        """Every utterance's text in order (the music says nothing)."""
        return " ".join(utterance.text for utterance in self.utterances)

    def samples(self) -> Samples:
        """The recording, 16 kHz mono float32."""
        return load_pcm16k(self.wav_path)

    def describe(self) -> str:
        """One line: how long, and of what."""
        totals: dict[str, float] = {}
        for passage in self.passages:
            label = passage.voice if passage.kind == SPEECH else passage.kind
            totals[label] = totals.get(label, 0.0) + passage.duration_s
        parts = ", ".join(f"{label} {seconds:.0f} s" for label, seconds in totals.items())
        words = len(self.reference_text.split())
        return (
            f"{self.duration_s:.1f} s of continuous speech, music and noise ({parts}); "
            f"{len(self.utterances)} utterances, {words} words ({words / self.duration_s * 60:.0f} a minute)"
        )


@dataclass(frozen=True)
class Clip:
    """A stretch of the recording that begins and ends between utterances."""

    start_s: float
    end_s: float
    reference_text: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def realistic_media(options: MediaOptions | None = None, cache_dir: Path = DEFAULT_CACHE_DIR) -> BenchMedia:
    """The realistic recording for `options`, built once and then read from `cache_dir`."""
    options = options or MediaOptions()
    directory = cache_dir / f"realistic-{cache_key(options)}"
    if not (directory / "reference.json").is_file():
        print(f"building the realistic bench recording once (cached in {directory})...", file=sys.stderr, flush=True)
        _build_into(directory, options)
    return _read_media(directory)


def cache_key(options: MediaOptions) -> str:
    """A digest of everything that decides the recording's samples."""
    described = json.dumps(
        {"version": MEDIA_VERSION, "options": dataclasses.asdict(options), "reading": READING_TEXT}, sort_keys=True
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _build_into(directory: Path, options: MediaOptions) -> None:
    """Build the recording's files in a folder beside `directory` and move it into place whole."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{directory.name}.", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the files from services run as another user
    try:
        samples, utterances, passages = build_realistic(options)
        write_wav(staging / "realistic.wav", samples)
        write_with_video(staging / "realistic.mp4", samples, audio_sample_rate_hertz=48_000, audio_channel_count=2)
        reference = {
            "version": MEDIA_VERSION,
            "options": dataclasses.asdict(options),
            "duration_s": samples.size / SAMPLE_RATE_HERTZ,
            "utterances": [dataclasses.asdict(utterance) for utterance in utterances],
            "passages": [dataclasses.asdict(passage) for passage in passages],
        }
        (staging / "reference.json").write_text(json.dumps(reference, indent=1))
        try:
            staging.replace(directory)
        except OSError:
            if not (directory / "reference.json").is_file():
                raise
            # Another run built the same recording meanwhile: keep theirs.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_media(directory: Path) -> BenchMedia:
    reference = json.loads((directory / "reference.json").read_text())
    return BenchMedia(
        wav_path=directory / "realistic.wav",
        mp4_path=directory / "realistic.mp4",
        duration_s=float(reference["duration_s"]),
        utterances=tuple(SpokenUtterance(**utterance) for utterance in reference["utterances"]),
        passages=tuple(Passage(**passage) for passage in reference["passages"]),
    )


class _Timeline:
    """Pieces of audio laid end to end, and the utterances and passages they hold."""

    def __init__(self) -> None:
        self.pieces: list[Samples] = []
        self.length_samples = 0
        self.utterances: list[SpokenUtterance] = []
        self.passages: list[Passage] = []

    @property
    def now_s(self) -> float:
        return self.length_samples / SAMPLE_RATE_HERTZ

    def add(self, samples: Samples) -> None:
        self.pieces.append(samples)
        self.length_samples += samples.size

    def pause(self, seconds: float) -> None:
        self.add(np.zeros(round(seconds * SAMPLE_RATE_HERTZ), dtype=np.float32))

    def samples(self) -> Samples:
        joined = np.concatenate(self.pieces) if self.pieces else np.zeros(0, dtype=np.float32)
        peak = float(np.max(np.abs(joined))) if joined.size else 0.0
        return joined / peak * 0.98 if peak > 0.98 else joined


def build_realistic(options: MediaOptions) -> tuple[Samples, list[SpokenUtterance], list[Passage]]:
    """The recording's samples (16 kHz mono), its utterances and its passages, in order."""
    rng = random.Random(options.seed)
    noise_rng = np.random.default_rng(options.seed)
    voices = {HUMAN_VOICE: _human_utterances(rng), SYNTHETIC_VOICE: _synthetic_utterances()}
    timeline = _Timeline()
    speech_s = 0.0
    for index in itertools.count():
        if speech_s >= options.speech_s - 1.0:
            break
        if index == options.music_after_stretch:
            _add_music(timeline, options)
        noisy = index == options.noisy_stretch
        remaining_s = options.speech_s - speech_s
        target_s = options.noisy_s if noisy else rng.uniform(options.stretch_min_s, options.stretch_max_s)
        if remaining_s - target_s < options.stretch_min_s / 2:
            target_s = remaining_s  # no short stretch left over at the end
        voice = HUMAN_VOICE if index % 2 == 0 else SYNTHETIC_VOICE
        level_dbfs = options.speech_level_dbfs + rng.uniform(-options.level_spread_db, options.level_spread_db)
        if index:
            timeline.pause(rng.uniform(options.turn_gap_min_s, options.turn_gap_max_s))
        stretch, utterances = _stretch(voices[voice], target_s, level_dbfs, options, rng)
        start_s = timeline.now_s
        if noisy:
            noise_rms = _db_to_amplitude(level_dbfs - options.noise_snr_db)
            stretch = _over_noise(stretch, noise_rms, noise_rng)
            start_s += _NOISE_LEAD_S
        timeline.add(stretch)
        timeline.utterances += [
            dataclasses.replace(
                utterance, start_s=utterance.start_s + start_s, end_s=utterance.end_s + start_s, noisy=noisy
            )
            for utterance in utterances
        ]
        speech_s += utterances[-1].end_s
        kind = NOISY_SPEECH if noisy else SPEECH
        stretch_start_s = timeline.now_s - stretch.size / SAMPLE_RATE_HERTZ
        timeline.passages.append(Passage(kind, voice, stretch_start_s, timeline.now_s))
    timeline.pause(0.5)
    return timeline.samples(), timeline.utterances, timeline.passages


def _human_utterances(rng: random.Random) -> Iterator[tuple[Samples, str, str]]:
    """The clear Asterisk prompts in a shuffled order, round and round: (samples, text, source)."""
    prompts = clear_prompts()
    rng.shuffle(prompts)
    for prompt in itertools.cycle(prompts):
        yield load_pcm16k(prompt.path), prompt.text, f"asterisk:{prompt.name}"


def _synthetic_utterances() -> Iterator[tuple[Samples, str, str]]:
    """The reading's sentences in joe's voice, in order, round and round."""
    from tests.voices import joe_says

    for sentence in itertools.cycle(reading_sentences()):
        yield joe_says(sentence), sentence, "joe"


def _stretch(
    source: Iterator[tuple[Samples, str, str]],
    target_s: float,
    level_dbfs: float,
    options: MediaOptions,
    rng: random.Random,
) -> tuple[Samples, list[SpokenUtterance]]:
    """Utterances from `source`, trimmed, levelled and joined by short gaps,
    until they last `target_s`; times are from the stretch's start."""
    pieces: list[Samples] = []
    utterances: list[SpokenUtterance] = []
    length_samples = 0
    while not utterances or length_samples < target_s * SAMPLE_RATE_HERTZ:
        samples, text, name = next(source)
        sound = _at_level(trim_silence(samples), level_dbfs + rng.uniform(-1.0, 1.0))
        if utterances:
            gap = np.zeros(round(rng.uniform(options.gap_min_s, options.gap_max_s) * SAMPLE_RATE_HERTZ), np.float32)
            pieces.append(gap)
            length_samples += gap.size
        start = length_samples
        pieces.append(sound)
        length_samples += sound.size
        utterances.append(SpokenUtterance(start / SAMPLE_RATE_HERTZ, length_samples / SAMPLE_RATE_HERTZ, text, name))
    return np.concatenate(pieces), utterances


def _add_music(timeline: _Timeline, options: MediaOptions) -> None:
    if not Path(options.music_path).is_file():
        raise FileNotFoundError(
            f"{options.music_path} is missing: install asterisk-moh-opsound-wav (`make test-data` does)"
        )
    music = load_pcm16k(options.music_path)
    start = round(options.music_offset_s * SAMPLE_RATE_HERTZ)
    passage = music[start : start + round(options.music_s * SAMPLE_RATE_HERTZ)]
    if passage.size == 0:
        raise ValueError(f"{options.music_path} is shorter than {options.music_offset_s} s")
    timeline.pause(_MUSIC_PAUSE_S)
    start_s = timeline.now_s
    timeline.add(_faded(_at_level(passage, options.music_level_dbfs, active_only=False), _MUSIC_FADE_S))
    timeline.passages.append(Passage(MUSIC, "", start_s, timeline.now_s))
    timeline.pause(_MUSIC_PAUSE_S)


def trim_silence(samples: Samples) -> Samples:
    """`samples` without the silence before the first and after the last sound
    (10 ms frames within 40 dB of the loudest), 30 ms of it kept either side."""
    frames = _frame_rms(samples)
    if frames.size == 0 or frames.max() <= 0:
        return samples
    loud = np.nonzero(frames >= frames.max() * _db_to_amplitude(-_TRIM_BELOW_PEAK_DB))[0]
    frame_samples = round(_FRAME_S * SAMPLE_RATE_HERTZ)
    margin_samples = round(_TRIM_MARGIN_S * SAMPLE_RATE_HERTZ)
    start = max(0, int(loud[0]) * frame_samples - margin_samples)
    end = min(samples.size, (int(loud[-1]) + 1) * frame_samples + margin_samples)
    return samples[start:end]


def pink_noise(size: int, rng: np.random.Generator) -> Samples:
    """Noise with equal power per octave (1/f), RMS 1."""
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequencies = np.fft.rfftfreq(size)
    frequencies[0] = frequencies[1] if size > 1 else 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(frequencies), n=size)
    rms = float(np.sqrt(np.mean(noise**2))) if size else 0.0
    return (noise / rms).astype(np.float32) if rms > 0 else noise.astype(np.float32)


def _over_noise(speech: Samples, noise_rms: float, rng: np.random.Generator) -> Samples:
    """`speech` with pink noise of `noise_rms` under it, the noise starting
    `_NOISE_LEAD_S` before it and ending as long after, faded in and out."""
    lead = round(_NOISE_LEAD_S * SAMPLE_RATE_HERTZ)
    noise = _faded(pink_noise(speech.size + 2 * lead, rng) * np.float32(noise_rms), _NOISE_LEAD_S / 2)
    noise[lead : lead + speech.size] += speech
    return noise


def _faded(samples: Samples, fade_s: float) -> Samples:
    """`samples` faded in and out over `fade_s` (raised cosine)."""
    fade = min(round(fade_s * SAMPLE_RATE_HERTZ), samples.size // 2)
    if fade == 0:
        return samples
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))).astype(np.float32)
    faded = samples.copy()
    faded[:fade] *= ramp
    faded[-fade:] *= ramp[::-1]
    return faded


def _frame_rms(samples: Samples) -> npt.NDArray[np.float64]:
    frame_samples = round(_FRAME_S * SAMPLE_RATE_HERTZ)
    count = samples.size // frame_samples
    if count == 0:
        return np.zeros(0)
    frames = samples[: count * frame_samples].astype(np.float64).reshape(count, frame_samples)
    return np.sqrt(np.mean(frames**2, axis=1))


def _at_level(samples: Samples, level_dbfs: float, *, active_only: bool = True) -> Samples:
    """`samples` scaled so that their RMS (over the frames within 40 dB of the
    loudest when `active_only`: pauses inside speech do not count) is `level_dbfs`."""
    frames = _frame_rms(samples)
    if frames.size == 0 or frames.max() <= 0:
        return samples
    if active_only:
        frames = frames[frames >= frames.max() * _db_to_amplitude(-_TRIM_BELOW_PEAK_DB)]
    rms = float(np.sqrt(np.mean(frames**2)))
    return (samples * np.float32(_db_to_amplitude(level_dbfs) / rms)).astype(np.float32)


def _db_to_amplitude(decibels: float) -> float:
    return float(10.0 ** (decibels / 20.0))


def cut_clips(media: BenchMedia, count: int, clip_s: float = 15.0, *, max_pause_s: float = 1.0) -> list[Clip]:
    """`count` clips of continuous speech of about `clip_s` each, spread
    evenly over the recording, none overlapping another.

    A clip is whole utterances in a row with at most `max_pause_s` between
    them (never across the music), as many as bring it closest to `clip_s`,
    cut in the gaps either side of them: at word boundaries, with their texts
    as its reference. Raises ValueError when the recording holds fewer than
    `count` such clips.
    """
    candidates = _clip_candidates(media.utterances, clip_s, max_pause_s)
    if len(candidates) < count:
        raise ValueError(f"the recording holds {len(candidates)} clips of {clip_s} s, fewer than {count}")
    chosen = [candidates[index * len(candidates) // count] for index in range(count)]
    return [_clip(media, first, last) for first, last in chosen]


def _clip_candidates(utterances: Sequence[SpokenUtterance], clip_s: float, max_pause_s: float) -> list[tuple[int, int]]:
    """(first, last) utterance indexes of back-to-back clips, each the run of
    utterances whose length is closest to `clip_s`; runs under 60% or over
    140% of it (a prompt longer than a clip, speech cut short by the music)
    are left out."""

    def length_s(first: int, last: int) -> float:
        return utterances[last].end_s - utterances[first].start_s + 2 * _CLIP_PAD_S

    candidates: list[tuple[int, int]] = []
    first = 0
    while first < len(utterances):
        last = first
        while (
            last + 1 < len(utterances)
            and utterances[last + 1].start_s - utterances[last].end_s <= max_pause_s
            and abs(length_s(first, last + 1) - clip_s) < abs(length_s(first, last) - clip_s)
        ):
            last += 1
        if 0.6 * clip_s <= length_s(first, last) <= 1.4 * clip_s:
            candidates.append((first, last))
        first = last + 1
    return candidates


def _clip(media: BenchMedia, first: int, last: int) -> Clip:
    utterances = media.utterances
    before_s = utterances[first].start_s - (utterances[first - 1].end_s if first else 0.0)
    next_start_s = utterances[last + 1].start_s if last + 1 < len(utterances) else media.duration_s
    after_s = next_start_s - utterances[last].end_s
    return Clip(
        start_s=utterances[first].start_s - min(_CLIP_PAD_S, before_s / 2),
        end_s=utterances[last].end_s + min(_CLIP_PAD_S, after_s / 2),
        reference_text=" ".join(utterance.text for utterance in utterances[first : last + 1]),
    )


def clip_samples(samples: Samples, clip: Clip) -> Samples:
    """The clip's part of the recording's samples."""
    return samples[round(clip.start_s * SAMPLE_RATE_HERTZ) : round(clip.end_s * SAMPLE_RATE_HERTZ)]


def write_clips(
    media: BenchMedia, clips: Sequence[Clip], directory: Path, writer: Callable[[Path, Samples], Path] | None = None
) -> list[tuple[Path, str]]:
    """Each clip as a file in `directory` (default: an MP4 with a video track,
    `tests.speech.write_with_video`), with its reference text."""
    write = writer or (lambda path, samples: write_with_video(path.with_suffix(".mp4"), samples))
    samples = media.samples()
    return [
        (write(directory / f"clip-{number:02d}", clip_samples(samples, clip)), clip.reference_text)
        for number, clip in enumerate(clips)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=MediaOptions.seed)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--clips", type=int, default=16, help="also list this many 15 s clips")
    options = parser.parse_args()
    media = realistic_media(MediaOptions(seed=options.seed), options.cache_dir)
    print(media.describe())
    print(f"WAV: {media.wav_path}\nMP4: {media.mp4_path}")
    for passage in media.passages:
        print(f"  {passage.start_s:7.1f}-{passage.end_s:7.1f} s  {passage.kind}  {passage.voice}")
    for clip in cut_clips(media, options.clips):
        text = clip.reference_text
        print(f"  clip {clip.start_s:7.2f}-{clip.end_s:7.2f} s ({clip.duration_s:4.1f} s): {text[:60]}...")


if __name__ == "__main__":
    main()
