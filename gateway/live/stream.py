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

`LiveTranscriber` runs these steps; each of its parts has one job, in its
own module of gateway/live/: the audio held (`buffer`), when an utterance is
decoded and what a stream sheds under load (`pacing`), an utterance's steps
(`utterance`), the agreement of their hypotheses and where to cut
(`agreement`), the lead-in and previous text of each decode (`context`), how
a final is decoded (`final_decode`), finals sent in order (`finals`) and the
responses (`results`).

Memory stays flat: audio before the current utterance and its lead-in is
dropped, an utterance is at most `max_utterance_s` long, and at most
`MAX_PENDING_FINALS` (finals.py) finals wait for their decode (a client
sending faster than real time then waits too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import TimeRange
from gateway.live import results
from gateway.live.agreement import cut_position, sentence_to_commit
from gateway.live.buffer import StreamBuffer
from gateway.live.context import DecodeContext, DecodeWindow, after_lead_in
from gateway.live.decoder import PRIORITY_FINAL, PRIORITY_INTERIM, Hypothesis
from gateway.live.final_decode import FinalDecode
from gateway.live.finals import FinalChain, resolved
from gateway.live.pacing import StepPacing, WorkerLoad
from gateway.live.settings import StreamSettings
from gateway.live.utterance import Step, Utterance
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2

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


class Decoder(WorkerLoad, Protocol):
    async def decode(
        self,
        samples: Samples,
        options: asr_pb2.TranscriptionOptions,
        *,
        priority: int,
        context: str = "",
        prefix: str = "",
    ) -> Hypothesis: ...


# Audio searched for a quiet point on each side of the gap where an utterance is cut.
_CUT_MARGIN = SAMPLE_RATE_HERTZ // 10
# Audio an utterance needs to be decoded for its final (less holds no word).
_MIN_FINAL_SAMPLES = round(0.3 * SAMPLE_RATE_HERTZ)


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
        self._pacing = StepPacing(settings, decoder)
        self._audio = StreamBuffer()
        self._context = DecodeContext(settings.context_audio_s)
        self._finals = FinalChain(self._note_failure)
        self._final_decode = FinalDecode(self._decode, self._context, settings.post_roll_s)
        # No utterance starts before this sample (the end of the last one's speech).
        self._floor = 0
        self._utterance: Utterance | None = None
        self._next_index = 0
        self.final_count = 0
        self.decode_count = 0
        # Decodes a stream cannot shed: finals, likely finals, first steps
        # and the steps long speech is cut at (not interim steps on spare workers).
        self.needed_decode_count = 0
        self._failure: BaseException | None = None

    @property
    def context(self) -> str:
        """What the stream said before, for the next decode."""
        return self._context.said

    @property
    def reused_finals(self) -> int:
        """Finals that took the likely-final step's hypothesis (no decode of their own)."""
        return self._final_decode.reused_finals

    @property
    def second_looks(self) -> int:
        """Finals decoded again on their own because the lead-in lost their last words."""
        return self._final_decode.second_looks

    @property
    def received_s(self) -> float:
        return self._audio.end_sample / SAMPLE_RATE_HERTZ

    @property
    def buffered_samples(self) -> int:
        """Samples held (for memory checks)."""
        return self._audio.held_samples

    async def feed(self, samples: Samples) -> None:
        """Analyses the next samples: speech events, steps and finals."""
        if self._failure is not None:
            raise self._failure
        if not samples.size:
            return
        self._audio.append(samples)
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
        await self._finals.bound()

    async def finish(self) -> None:
        """The end of the audio: the open utterance is made final, and every
        pending final is sent."""
        if self._utterance is not None:
            utterance, self._utterance = self._utterance, None
            self._schedule_final(utterance, self._audio.end_sample)
        await self._finals.wait()

    async def close(self) -> None:
        """Cancels everything in flight (the client went away)."""
        tasks = self._finals.unfinished()
        if self._utterance is not None:
            tasks += self._utterance.running_tasks()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._audio.clear()

    # Utterances -----------------------------------------------------------

    def _begin(self, start_s: float) -> None:
        speech_start = round(start_s * SAMPLE_RATE_HERTZ)
        self._emit(results.speech_begin(start_s))
        if self._utterance is not None:
            return
        start = max(speech_start - round(self._settings.pre_roll_s * SAMPLE_RATE_HERTZ), self._floor, 0)
        self._utterance = Utterance(index=self._next_index, start=start, speech_start=speech_start)
        self._next_index += 1

    async def _end(self, speech: TimeRange) -> None:
        self._emit(results.speech_end(speech.end_s))
        utterance, self._utterance = self._utterance, None
        speech_end = round(speech.end_s * SAMPLE_RATE_HERTZ)
        self._floor = max(self._floor, speech_end)
        if utterance is None:
            return
        end = min(self._audio.end_sample, speech_end + round(self._settings.post_roll_s * SAMPLE_RATE_HERTZ))
        self._schedule_final(utterance, end)

    async def _grow(self, utterance: Utterance, update: VadUpdate) -> None:
        """Decides, after a block, whether the utterance is cut, a step
        starts, or nothing happens."""
        total = self._audio.end_sample
        length = total - utterance.start
        if self._pacing.must_cut(length):
            await self._cut(utterance)
            return
        if update.trailing_silence_s == 0.0:
            utterance.pre_final_done = False
        pre_final = (
            self._pacing.at_pause(in_speech=update.in_speech, trailing_silence_s=update.trailing_silence_s)
            and not utterance.pre_final_done
        )
        in_flight = utterance.in_flight
        if in_flight is not None:
            if pre_final and not in_flight.at_pause:
                # The likely final does not wait for an interim step: with it
                # the final is ready as soon as the VAD confirms the end.
                utterance.pre_final_done = True
                self._start_step(utterance, PRIORITY_FINAL, at_pause=True)
            return
        sentence = self._agreed_sentence(utterance, length)
        if sentence:
            # Long speech: every sentence two steps agreed on is final at once.
            await self._cut(utterance, sentence)
            return
        if pre_final:
            utterance.pre_final_done = True
            self._start_step(utterance, PRIORITY_FINAL, at_pause=True)
            return
        priority = self._pacing.due_step(
            length_samples=length,
            since_speech_samples=total - utterance.speech_start,
            since_step_samples=None if utterance.latest is None else total - utterance.latest.end,
        )
        if priority is not None:
            self._start_step(utterance, priority)

    def _agreed_sentence(self, utterance: Utterance, length: int) -> int:
        """Words of a long utterance's latest hypothesis to make final now
        (`agreement.sentence_to_commit`); 0 when there are none."""
        latest = utterance.latest
        if latest is None or latest.hypothesis is None or not self._pacing.commits_sentences(length):
            return 0
        return sentence_to_commit(latest.hypothesis.words, utterance.agreed, at_pause=latest.at_pause)

    def _start_step(self, utterance: Utterance, priority: int, *, at_pause: bool = False) -> Step:
        step = Step(start=utterance.start, end=self._audio.end_sample, at_pause=at_pause)
        window = self._window(step.start, step.end, lead_in=self._pacing.lead_in(at_pause=at_pause))
        step.led_in = window.lead_in > 0
        samples = self._audio.slice(window.start, window.end)
        utterance.launch(step)
        step.task = asyncio.get_running_loop().create_task(self._run_step(utterance, step, window, samples, priority))
        step.task.add_done_callback(self._note_failure)
        return step

    def _window(self, start: int, end: int, *, lead_in: bool = True) -> DecodeWindow:
        """What decoding samples [start, end) sends: with a lead-in unless
        not `lead_in` or a final is pending (its text is not known yet)."""
        return self._context.window(
            start, end, lead_in=lead_in and not self._finals.pending, first_held=self._audio.first_sample
        )

    async def _decode(self, window: DecodeWindow, samples: Samples, priority: int) -> Hypothesis:
        """The hypothesis of a window's audio after its lead-in, its words
        timed from the end of the lead-in (the start of the utterance's audio)."""
        hypothesis = await self._decoder.decode(
            samples, self._options, priority=priority, context=window.context, prefix=window.prefix
        )
        self.decode_count += 1
        if priority != PRIORITY_INTERIM:
            self.needed_decode_count += 1
        return after_lead_in(hypothesis, window)

    async def _run_step(
        self, utterance: Utterance, step: Step, window: DecodeWindow, samples: Samples, priority: int
    ) -> None:
        try:
            step.hypothesis = hypothesis = await self._decode(window, samples, priority)
        finally:
            utterance.settle(step)
        if not utterance.record(step, hypothesis):
            return  # a later step (the likely final) finished first
        if self._settings.interim_results and self._utterance is utterance and hypothesis.text:
            self._emit(results.interim(utterance.index, utterance.start, step.end, hypothesis, utterance.agreed))

    async def _cut(self, utterance: Utterance, kept: int | None = None) -> None:
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
            cut = self._audio.quietest(low - _CUT_MARGIN, max(low, high) + _CUT_MARGIN)
            hypothesis = Hypothesis(" ".join(word.text for word in words), words, latest.hypothesis.language_code)
            self._chain_final(utterance, latest.start, cut, resolved(hypothesis))
        else:
            cut = self._audio.end_sample
            self._schedule_final(utterance, cut)
        self._utterance = Utterance(index=self._next_index, start=cut, speech_start=cut)
        self._next_index += 1

    # Finals -----------------------------------------------------------------

    def _schedule_final(self, utterance: Utterance, end: int) -> None:
        if end - utterance.start < _MIN_FINAL_SAMPLES:
            return  # (the rest of an utterance cut just before speech ended: nothing to decode)
        window = self._window(utterance.start, end)
        samples = self._audio.slice(window.start, window.end)
        decoding = self._final_decode.hypothesis(utterance, end, window, samples, pending=utterance.in_flight)
        self._chain_final(utterance, utterance.start, end, decoding)

    def _chain_final(self, utterance: Utterance, start: int, end: int, decoding: Awaitable[Hypothesis | None]) -> None:
        """Sends the final of samples [start, end) once `decoding` gives it
        and the finals before it are sent."""
        self._finals.add(decoding, lambda hypothesis: self._send_final(utterance.index, start, end, hypothesis))

    def _send_final(self, index: int, start: int, end: int, hypothesis: Hypothesis) -> None:
        result = results.final(index, start, end, hypothesis)
        if result is None:
            return
        if hypothesis.language_code and not self._options.language_code:
            # Detected on the first utterance; kept for the rest of the stream.
            self._options.language_code = hypothesis.language_code
        self.final_count += 1
        self._context.remember(start, end, result.text)
        self._emit(result.response)

    def _note_failure(self, task: asyncio.Task[None]) -> None:
        """Keeps the first error of a step or final, for `feed` to raise:
        a stream whose decodes fail ends with that error."""
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    # Audio ------------------------------------------------------------------

    def _trim(self) -> None:
        if self._utterance is not None:
            keep_from = self._utterance.start
        else:
            pre_roll = round(self._settings.pre_roll_s * SAMPLE_RATE_HERTZ)
            keep_from = max(self._floor, self._audio.end_sample - pre_roll)
        # The audio that may lead in an utterance still to come (a lead-in is at
        # most context_audio_s) is kept, finals pending included; finals
        # further back are forgotten.
        keep_from = max(0, keep_from - round(self._settings.context_audio_s * SAMPLE_RATE_HERTZ))
        self._context.forget_before(keep_from)
        self._audio.drop_before(keep_from)
