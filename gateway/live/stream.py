"""The engine of one live stream: utterances found by a streaming VAD,
re-decoded as they grow, made final at the end of speech.

- Speech detection is the VAD service's `StreamSpeech` (silero, its state
  carried across blocks); it tells where speech began and ended and how long
  the end of the audio has been silent.
- While an utterance grows, every `step_s` of new audio its whole audio so
  far (from a little before its start) is decoded again. The leading words
  two consecutive hypotheses agree on are its stable part (the
  LocalAgreement policy of whisper_streaming); interim results carry the
  text, the stable part and their ratio.
- When speech ends the utterance is decoded once more, whole, with the
  stream's options, and sent as final with its words. When the end of the
  audio has been silent for `final_silence_s` a step is decoded at once,
  ahead of interim steps: when speech does end, that step already covers the
  whole utterance and is the final, so the final comes about as soon as the
  VAD has heard enough silence.
- Every decode hears what the stream said before it: the audio of its last
  finals (up to `context_audio_s`) is decoded again ahead of the utterance,
  with their text forced as the start of the transcript, so the model
  continues it as it would in a file. Only while no final is pending (the
  lead-in's text must be what its audio said); a decode without a lead-in
  gets the text of the last finals (up to `CONTEXT_CHARS`) as previous
  text instead, as whisper_streaming prompts its decodes. Not both: text
  before a lead-in only biased the model towards words said earlier ("3 to
  eject" heard as "3 to reject" after "2 to reject it"). A final whose words
  stop well before its speech does (the model, continuing the lead-in's
  text, ended early) is decoded again without the lead-in.
- An utterance that reaches `max_utterance_s` while speech goes on is made
  final at the end of its last agreed word (or, with none, decoded whole) and
  the rest goes on as the next utterance.

Memory stays flat: audio before the current utterance and its lead-in is
dropped, an utterance is at most `max_utterance_s` long, and at most
`MAX_PENDING_FINALS` finals wait for their decode (a client sending faster
than real time then waits too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from common.limits import SAMPLE_RATE_HERTZ
from common.rpc.convert import seconds_to_duration, word_to_proto
from common.transcript import TimeRange, Word
from gateway.live.agreement import agreed_prefix, cut_position, sentence_to_commit
from gateway.live.decoder import PRIORITY_FINAL, PRIORITY_FIRST_STEP, PRIORITY_INTERIM, Hypothesis
from gateway.live.settings import StreamSettings
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2

MAX_PENDING_FINALS = 4
# Text of the stream's last finals given to each decode as what came before
# (whisper_streaming's 200 characters).
CONTEXT_CHARS = 200
# Whisper's window less a margin: a lead-in and its utterance fit in it.
MAX_WINDOW_S = 29.0
# Text of the finals a lead-in holds at most (the ASR service takes 600 characters).
MAX_LEAD_IN_CHARS = 500

Samples = npt.NDArray[np.float32]
Emit = Callable[[gateway_pb2.StreamingTranscribeResponse], None]


@dataclass(frozen=True)
class VadUpdate:
    """What the streaming VAD said about one block."""

    speech_starts: tuple[float, ...]
    speech_ends: tuple[TimeRange, ...]
    in_speech: bool
    trailing_silence_s: float


class SpeechDetection(Protocol):
    async def feed(self, samples: Samples) -> VadUpdate: ...


class Decoder(Protocol):
    @property
    def idle(self) -> bool: ...

    @property
    def pressure(self) -> float: ...

    async def decode(
        self,
        samples: Samples,
        options: asr_pb2.TranscriptionOptions,
        *,
        priority: int,
        context: str = "",
        prefix: str = "",
    ) -> Hypothesis: ...


@dataclass(frozen=True)
class _Final:
    """A final sent: its audio, samples [start, end) of the stream, and text."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Window:
    """What one decode sends: samples [start, end) of the stream, the first
    `lead_in` of them the audio of earlier finals whose text is `prefix`."""

    start: int
    end: int
    lead_in: int
    prefix: str
    context: str


@dataclass
class _Step:
    """A decode of samples [start, end) of the stream."""

    start: int
    end: int
    hypothesis: Hypothesis | None = None
    task: asyncio.Task[None] | None = None
    # Decoded because the end of its audio was silent (a pause, maybe the end of speech).
    at_pause: bool = False
    # Decoded after a lead-in of earlier finals.
    led_in: bool = False


@dataclass
class _Utterance:
    index: int
    # First sample of its audio (speech start less the pre-roll).
    start: int
    speech_start: int
    latest: _Step | None = None
    previous_words: tuple[Word, ...] = ()
    # Leading words of `latest` agreed on with the hypothesis before it.
    agreed: int = 0
    in_flight: _Step | None = None
    pre_final_done: bool = False
    steps: list[_Step] = field(default_factory=list)


# Audio searched for a quiet point on each side of the gap where an utterance is cut.
_CUT_MARGIN = SAMPLE_RATE_HERTZ // 10
# Audio an utterance needs to be decoded for its final (less holds no word).
_MIN_FINAL_SAMPLES = round(0.3 * SAMPLE_RATE_HERTZ)
# A final decoded after a lead-in whose last word ends this long before its
# speech does (or that has no word at all) lost words: the model, continuing
# the lead-in's text, stopped early. It is decoded again on its own.
_LOST_TAIL_S = 0.6


def _last_chars(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, from a word's start."""
    text = text.strip()
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    space = tail.find(" ")
    return tail[space + 1 :] if space >= 0 else tail


def heard_until(hypothesis: Hypothesis) -> float:
    """Where its last word ends (0 without words)."""
    return hypothesis.words[-1].end_s if hypothesis.words else 0.0


def lost_tail(hypothesis: Hypothesis, speech_s: float) -> bool:
    """Whether a final's words stop well before the end of its speech
    (`speech_s` from the start of its audio)."""
    return heard_until(hypothesis) < speech_s - _LOST_TAIL_S


class LiveTranscriber:
    """One stream: `feed` its 16 kHz samples in order, then `finish`.
    Responses go to `emit` as they are ready."""

    def __init__(
        self,
        decoder: Decoder,
        vad: SpeechDetection,
        options: asr_pb2.TranscriptionOptions,
        settings: StreamSettings,
        emit: Emit,
    ) -> None:
        self._decoder = decoder
        self._vad = vad
        self._options = asr_pb2.TranscriptionOptions()
        self._options.CopyFrom(options)
        self._options.word_timestamps = True
        self._settings = settings
        self._emit = emit
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0
        self._total = 0
        # No utterance starts before this sample (the end of the last one's speech).
        self._floor = 0
        self._utterance: _Utterance | None = None
        self._next_index = 0
        self._finals: list[asyncio.Task[None]] = []
        self._last_final: asyncio.Task[None] | None = None
        self.final_count = 0
        self.decode_count = 0
        # Decodes a stream cannot shed: finals, likely finals, first steps
        # and the steps long speech is cut at (not interim steps on spare workers).
        self.needed_decode_count = 0
        # Finals that took the likely-final step's hypothesis (no decode of their own).
        self.reused_finals = 0
        # Finals decoded again on their own because the lead-in lost their last words.
        self.second_looks = 0
        self._failure: BaseException | None = None
        # The stream's finals so far, their last CONTEXT_CHARS characters.
        self._said = ""
        # The last finals, whose audio may lead a decode (see `_window`).
        self._recent: list[_Final] = []

    @property
    def context(self) -> str:
        """What the stream said before, for the next decode."""
        return self._said

    @property
    def received_s(self) -> float:
        return self._total / SAMPLE_RATE_HERTZ

    @property
    def buffered_samples(self) -> int:
        """Samples held (for memory checks)."""
        return int(self._buffer.shape[0])

    async def feed(self, samples: Samples) -> None:
        """Analyses the next samples: speech events, steps and finals."""
        if self._failure is not None:
            raise self._failure
        if not samples.size:
            return
        self._buffer = np.concatenate((self._buffer, samples))
        self._total += samples.shape[0]
        update = await self._vad.feed(samples)
        events: list[tuple[float, int, TimeRange | None]] = [(start, 0, None) for start in update.speech_starts]
        events += [(end.end_s, 1, end) for end in update.speech_ends]
        for at_s, _kind, ended in sorted(events, key=lambda event: (event[0], event[1])):
            if ended is None:
                self._begin(at_s)
            else:
                await self._end(ended)
        if self._utterance is not None:
            await self._grow(self._utterance, update)
        self._trim()
        await self._bound_pending_finals()

    async def finish(self) -> None:
        """The end of the audio: the open utterance is made final, and every
        pending final is sent."""
        if self._utterance is not None:
            utterance, self._utterance = self._utterance, None
            self._schedule_final(utterance, self._total)
        if self._last_final is not None:
            await self._last_final

    async def close(self) -> None:
        """Cancels everything in flight (the client went away)."""
        tasks = [task for task in self._finals if not task.done()]
        if self._utterance is not None:
            tasks += [step.task for step in self._utterance.steps if step.task is not None and not step.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._buffer = np.zeros(0, dtype=np.float32)

    # Utterances -----------------------------------------------------------

    def _begin(self, start_s: float) -> None:
        speech_start = round(start_s * SAMPLE_RATE_HERTZ)
        self._emit(
            gateway_pb2.StreamingTranscribeResponse(
                speech_begin=gateway_pb2.SpeechActivity(offset=seconds_to_duration(start_s))
            )
        )
        if self._utterance is not None:
            return
        start = max(speech_start - round(self._settings.pre_roll_s * SAMPLE_RATE_HERTZ), self._floor, 0)
        self._utterance = _Utterance(index=self._next_index, start=start, speech_start=speech_start)
        self._next_index += 1

    async def _end(self, speech: TimeRange) -> None:
        self._emit(
            gateway_pb2.StreamingTranscribeResponse(
                speech_end=gateway_pb2.SpeechActivity(offset=seconds_to_duration(speech.end_s))
            )
        )
        utterance, self._utterance = self._utterance, None
        speech_end = round(speech.end_s * SAMPLE_RATE_HERTZ)
        self._floor = max(self._floor, speech_end)
        if utterance is None:
            return
        end = min(self._total, speech_end + round(self._settings.post_roll_s * SAMPLE_RATE_HERTZ))
        self._schedule_final(utterance, end)

    async def _grow(self, utterance: _Utterance, update: VadUpdate) -> None:
        settings = self._settings
        length = self._total - utterance.start
        if length >= settings.max_utterance_s * SAMPLE_RATE_HERTZ:
            await self._cut(utterance)
            return
        if update.trailing_silence_s == 0.0:
            utterance.pre_final_done = False
        pre_final = (
            update.in_speech and update.trailing_silence_s >= settings.final_silence_s and not utterance.pre_final_done
        )
        in_flight = utterance.in_flight
        if in_flight is not None:
            if pre_final and not in_flight.at_pause:
                # The likely final does not wait for an interim step: with it
                # the final is ready as soon as the VAD confirms the end.
                utterance.pre_final_done = True
                self._start_step(utterance, PRIORITY_FINAL, at_pause=True)
            return
        sentence = self._agreed_sentence(utterance)
        if sentence:
            # Long speech: every sentence two steps agreed on is final at once.
            await self._cut(utterance, sentence)
            return
        latest_end = utterance.latest.end if utterance.latest is not None else None
        if latest_end is None:
            due = self._total - utterance.speech_start >= settings.first_step_s * SAMPLE_RATE_HERTZ
        else:
            due = self._total - latest_end >= self._step_s() * SAMPLE_RATE_HERTZ
        # A long utterance needs recent agreed words to be cut at (a sentence
        # from sentence_commit_s, any words at max_utterance_s): its steps
        # go on whatever the load, ahead of ordinary interim steps.
        long = length >= min(settings.sentence_commit_s, settings.max_utterance_s / 2) * SAMPLE_RATE_HERTZ
        if not settings.interim_results and not long:
            due = False
        if due and latest_end is not None and not long and not self._decoder.idle:
            # Later interim steps only use spare capacity (a worker is kept
            # free for finals): under load, finals and first results keep
            # their latency and interims come less often.
            due = False
        if pre_final:
            utterance.pre_final_done = True
        if pre_final:
            self._start_step(utterance, PRIORITY_FINAL, at_pause=True)
        elif due:
            self._start_step(utterance, PRIORITY_FIRST_STEP if latest_end is None or long else PRIORITY_INTERIM)

    def _step_s(self) -> float:
        """New audio between two steps now: `step_s`, growing towards
        `max_step_s` as the workers fall behind."""
        settings = self._settings
        stretch = min(1.0, max(0.0, self._decoder.pressure))
        return settings.step_s + (max(settings.max_step_s, settings.step_s) - settings.step_s) * stretch

    def _start_step(self, utterance: _Utterance, priority: int, *, at_pause: bool = False) -> _Step:
        step = _Step(start=utterance.start, end=self._total, at_pause=at_pause)
        # Behind: a step that is not a likely final goes without the lead-in (a shorter window).
        window = self._window(step.start, step.end, lead_in=at_pause or self._decoder.pressure < 1.0)
        step.led_in = window.lead_in > 0
        samples = self._slice(window.start, window.end)
        utterance.in_flight = step
        utterance.steps.append(step)
        step.task = asyncio.get_running_loop().create_task(self._run_step(utterance, step, window, samples, priority))
        step.task.add_done_callback(self._note_failure)
        return step

    def _window(self, start: int, end: int, *, lead_in: bool = True) -> _Window:
        """What decoding samples [start, end) sends: led in by the audio of
        the last finals that fit `context_audio_s` and Whisper's window, with
        their text as the prefix. Without a lead-in while a final is pending
        (its text is not known yet), when the finals are too far back or
        when not `lead_in`: then with the stream's last finals as previous
        text."""
        pending = not lead_in or (self._last_final is not None and not self._last_final.done())
        budget = min(MAX_WINDOW_S * SAMPLE_RATE_HERTZ, end - start + self._settings.context_audio_s * SAMPLE_RATE_HERTZ)
        chosen: list[_Final] = []
        chars = 0
        for final in reversed(self._recent if not pending else []):
            chars += len(final.text) + 1
            too_far = end - final.start > budget or chars > MAX_LEAD_IN_CHARS or final.start < self._buffer_start
            if final.start >= start or too_far:
                break
            chosen.append(final)
        if not chosen:
            return _Window(start, end, 0, "", self.context)
        prefix = " ".join(final.text for final in reversed(chosen))
        first = chosen[-1].start
        return _Window(first, end, start - first, prefix, "")

    async def _decode(self, window: _Window, samples: Samples, priority: int) -> Hypothesis:
        """The hypothesis of a window's audio after its lead-in, its words
        timed from the end of the lead-in (the start of the utterance's audio)."""
        hypothesis = await self._decoder.decode(
            samples, self._options, priority=priority, context=window.context, prefix=window.prefix
        )
        self.decode_count += 1
        if priority != PRIORITY_INTERIM:
            self.needed_decode_count += 1
        if not window.lead_in:
            return hypothesis
        shift_s = window.lead_in / SAMPLE_RATE_HERTZ
        # Words heard wholly in the lead-in are speech no final holds (noise,
        # a dropped utterance): not this utterance's.
        words = tuple(
            dataclasses.replace(word, start_s=max(0.0, word.start_s - shift_s), end_s=word.end_s - shift_s)
            for word in hypothesis.words
            if word.end_s > shift_s
        )
        if len(words) == len(hypothesis.words):
            return Hypothesis(hypothesis.text, words, hypothesis.language_code)
        return Hypothesis(" ".join(word.text for word in words), words, hypothesis.language_code)

    async def _run_step(
        self, utterance: _Utterance, step: _Step, window: _Window, samples: Samples, priority: int
    ) -> None:
        try:
            step.hypothesis = await self._decode(window, samples, priority)
        finally:
            if utterance.in_flight is step:
                utterance.in_flight = None
            utterance.steps = [other for other in utterance.steps if other is not step]
        hypothesis = step.hypothesis
        if utterance.latest is not None and utterance.latest.end >= step.end:
            return  # a later step (the likely final) finished first
        if utterance.latest is not None and utterance.latest.hypothesis is not None:
            utterance.previous_words = utterance.latest.hypothesis.words
        utterance.latest = step
        utterance.agreed = agreed_prefix(utterance.previous_words, hypothesis.words)
        if self._settings.interim_results and self._utterance is utterance and hypothesis.text:
            words = hypothesis.words
            self._emit(
                gateway_pb2.StreamingTranscribeResponse(
                    interim=gateway_pb2.StreamingResult(
                        text=hypothesis.text,
                        start_offset=seconds_to_duration(utterance.start / SAMPLE_RATE_HERTZ),
                        end_offset=seconds_to_duration(step.end / SAMPLE_RATE_HERTZ),
                        stability=utterance.agreed / len(words) if words else 0.0,
                        stable_text=" ".join(word.text for word in words[: utterance.agreed]),
                        utterance_index=utterance.index,
                        language_code=hypothesis.language_code,
                    )
                )
            )

    async def _cut(self, utterance: _Utterance, kept: int | None = None) -> None:
        """Makes an utterance final where two steps agreed (after `kept`
        words, or where `cut_position` says), and goes on with the rest as
        the next utterance."""
        if utterance.in_flight is not None and utterance.in_flight.task is not None:
            await asyncio.shield(utterance.in_flight.task)
        latest = utterance.latest
        if latest is not None and latest.hypothesis is not None and utterance.agreed:
            all_words = latest.hypothesis.words
            kept = kept or cut_position(all_words, utterance.agreed)
            words = all_words[:kept]
            # Between the last kept word and the next one, at the quietest
            # 10 ms: the next utterance must not start inside a word.
            low = latest.start + round(words[-1].end_s * SAMPLE_RATE_HERTZ)
            high = (
                latest.start + round(all_words[kept].start_s * SAMPLE_RATE_HERTZ)
                if kept < len(all_words)
                else low + round(0.2 * SAMPLE_RATE_HERTZ)
            )
            cut = self._quietest(low - _CUT_MARGIN, max(low, high) + _CUT_MARGIN)
            hypothesis = Hypothesis(" ".join(word.text for word in words), words, latest.hypothesis.language_code)
            self._chain_final(utterance, latest.start, cut, self._resolved(hypothesis))
        else:
            cut = self._total
            self._schedule_final(utterance, cut)
        self._utterance = _Utterance(index=self._next_index, start=cut, speech_start=cut)
        self._next_index += 1

    def _agreed_sentence(self, utterance: _Utterance) -> int:
        """Words of a long utterance's latest hypothesis to make final now
        (`agreement.sentence_to_commit`); 0 when there are none."""
        latest = utterance.latest
        if (
            latest is None
            or latest.hypothesis is None
            or self._total - utterance.start < self._settings.sentence_commit_s * SAMPLE_RATE_HERTZ
        ):
            return 0
        return sentence_to_commit(latest.hypothesis.words, utterance.agreed, at_pause=latest.at_pause)

    def _quietest(self, start: int, end: int) -> int:
        """The middle of the quietest 10 ms window of samples [start, end) held."""
        start = max(start, self._buffer_start)
        end = min(end, self._total)
        window = SAMPLE_RATE_HERTZ // 100
        samples = self._slice(start, end)
        if samples.shape[0] < 2 * window:
            return max(start, min(end, (start + end) // 2))
        frames = samples[: samples.shape[0] // window * window].reshape(-1, window)
        return start + int(np.argmin((frames**2).mean(axis=1))) * window + window // 2

    # Finals -----------------------------------------------------------------

    def _schedule_final(self, utterance: _Utterance, end: int) -> None:
        if end - utterance.start < _MIN_FINAL_SAMPLES:
            return  # (the rest of an utterance cut just before speech ended: nothing to decode)
        window = self._window(utterance.start, end)
        samples = self._slice(window.start, window.end)
        pending = utterance.in_flight

        speech_s = (end - utterance.start) / SAMPLE_RATE_HERTZ - self._settings.post_roll_s

        async def decode() -> Hypothesis | None:
            if pending is not None and pending.task is not None:
                await asyncio.shield(pending.task)
            latest = utterance.latest
            tolerance = round(0.05 * SAMPLE_RATE_HERTZ)
            if (
                latest is not None
                and latest.hypothesis is not None
                and latest.start == utterance.start
                and latest.end >= end - tolerance
            ):
                self.reused_finals += 1
                hypothesis, led_in = latest.hypothesis, latest.led_in  # the likely-final step covered it all
            else:
                hypothesis, led_in = await self._decode(window, samples, PRIORITY_FINAL), window.lead_in > 0
            if led_in and lost_tail(hypothesis, speech_s):
                self.second_looks += 1
                alone = _Window(utterance.start, end, 0, "", self.context)
                second = await self._decode(alone, samples[window.lead_in :], PRIORITY_FINAL)
                # Kept when it hears further and drops nothing (a noise at
                # the end may be all that set the second look off).
                if heard_until(second) > heard_until(hypothesis) and len(second.words) >= len(hypothesis.words):
                    return second
            return hypothesis

        self._chain_final(utterance, utterance.start, end, decode())

    @staticmethod
    async def _resolved(hypothesis: Hypothesis) -> Hypothesis | None:
        return hypothesis

    def _chain_final(self, utterance: _Utterance, start: int, end: int, decoding: Awaitable[Hypothesis | None]) -> None:
        previous = self._last_final

        async def run() -> None:
            hypothesis = await decoding
            if previous is not None:
                await previous
            if hypothesis is not None:
                self._send_final(utterance.index, start, end, hypothesis)

        task = asyncio.get_running_loop().create_task(run())
        task.add_done_callback(self._note_failure)
        self._finals.append(task)
        self._last_final = task

    def _send_final(self, index: int, start: int, end: int, hypothesis: Hypothesis) -> None:
        offset_s = start / SAMPLE_RATE_HERTZ
        end_s = end / SAMPLE_RATE_HERTZ
        words = [
            Word(
                text=word.text,
                start_s=round(min(offset_s + word.start_s, end_s), 3),
                end_s=round(min(offset_s + word.end_s, end_s), 3),
                probability=word.probability,
                interpolated=word.interpolated,
            )
            for word in hypothesis.words
        ]
        text = " ".join(word.text for word in words) if words else hypothesis.text
        if not text.strip():
            return
        if hypothesis.language_code and not self._options.language_code:
            # Detected on the first utterance; kept for the rest of the stream.
            self._options.language_code = hypothesis.language_code
        self.final_count += 1
        self._said = _last_chars(f"{self._said} {text}", CONTEXT_CHARS)
        self._recent.append(_Final(start, end, text))
        self._emit(
            gateway_pb2.StreamingTranscribeResponse(
                final=gateway_pb2.StreamingResult(
                    text=text,
                    start_offset=seconds_to_duration(words[0].start_s if words else offset_s),
                    end_offset=seconds_to_duration(words[-1].end_s if words else end_s),
                    words=[word_to_proto(word) for word in words],
                    stability=1.0,
                    stable_text=text,
                    utterance_index=index,
                    language_code=hypothesis.language_code,
                )
            )
        )

    def _note_failure(self, task: asyncio.Task[None]) -> None:
        """Keeps the first error of a step or final, for `feed` to raise:
        a stream whose decodes fail ends with that error."""
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _bound_pending_finals(self) -> None:
        self._finals = [task for task in self._finals if not task.done()]
        while len(self._finals) > MAX_PENDING_FINALS:
            await asyncio.shield(self._finals[0])
            self._finals = [task for task in self._finals if not task.done()]

    # Audio ------------------------------------------------------------------

    def _slice(self, start: int, end: int) -> Samples:
        begin = max(start - self._buffer_start, 0)
        return np.array(self._buffer[begin : end - self._buffer_start], dtype=np.float32)

    def _trim(self) -> None:
        if self._utterance is not None:
            keep_from = self._utterance.start
        else:
            keep_from = max(self._floor, self._total - round(self._settings.pre_roll_s * SAMPLE_RATE_HERTZ))
        # The audio that may lead in an utterance still to come (a lead-in is at
        # most context_audio_s) is kept, finals pending included; finals
        # further back are forgotten.
        keep_from = max(0, keep_from - round(self._settings.context_audio_s * SAMPLE_RATE_HERTZ))
        self._recent = [final for final in self._recent if final.start >= keep_from]
        # Amortised: drop once a second's worth is stale.
        if keep_from - self._buffer_start >= SAMPLE_RATE_HERTZ:
            self._buffer = np.array(self._buffer[keep_from - self._buffer_start :], dtype=np.float32)
            self._buffer_start = keep_from
