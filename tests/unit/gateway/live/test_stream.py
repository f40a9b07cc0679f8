"""The live-caption engine: one stream's transcriber (with a fake decoder and
VAD), the streaming VAD on real speech. Its parts have
tests of their own (test_agreement, test_pacing, test_context, ...)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from common.transcript import TimeRange, Word
from gateway.live.decoder import PRIORITY_FINAL, Hypothesis
from gateway.live.settings import StreamSettings
from gateway.live.stream import LiveTranscriber, VadUpdate
from services.vad.engine import LiveVadOptions, SpeechDetector, bundled_model_path
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.speech import SAMPLE_RATE_HERTZ, join_prompts

RATE = SAMPLE_RATE_HERTZ


class FakeDecoder:
    """Hears word N at 0.5 N s: the hypothesis of a step is every whole word
    in its audio."""

    idle = True
    pressure = 0.0

    def __init__(self, *, stops_early_after_lead_in: bool = False) -> None:
        # Loses the last second of words whenever it continues a prefix, as
        # Whisper sometimes does after a lead-in.
        self.stops_early_after_lead_in = stops_early_after_lead_in
        self.calls: list[tuple[int, int]] = []
        # (beam size, words timed, context) of each call.
        self.asked: list[tuple[int, bool, str]] = []
        # The prefix of each call.
        self.prefixes: list[str] = []

    async def decode(
        self,
        samples: np.ndarray,
        options: asr_pb2.TranscriptionOptions,
        *,
        priority: int,
        context: str = "",
        prefix: str = "",
    ) -> Hypothesis:
        await asyncio.sleep(0)
        self.calls.append((samples.size, priority))
        self.asked.append((options.beam_size, options.word_timestamps, context))
        self.prefixes.append(prefix)
        count = int(samples.size / RATE / 0.5)
        heard = tuple(Word(f"w{index}", index * 0.5, index * 0.5 + 0.4) for index in range(count))
        # As the ASR service: the prefix's words are left out of the result.
        heard = heard[len(prefix.split()) :]
        if prefix and self.stops_early_after_lead_in:
            heard = heard[:-2]
        return Hypothesis(" ".join(word.text for word in heard), heard, "en")


class ScriptedVad:
    """Speech over [start, end) seconds of the stream."""

    def __init__(self, start_s: float, end_s: float, min_silence_s: float = 0.5) -> None:
        self.start_s, self.end_s, self.min_silence_s = start_s, end_s, min_silence_s
        self.fed = 0
        self.began = self.ended = False

    async def feed(self, samples: np.ndarray) -> VadUpdate:
        self.fed += samples.size
        now = self.fed / RATE
        starts: tuple[float, ...] = ()
        ends: tuple[TimeRange, ...] = ()
        if not self.began and now >= self.start_s:
            self.began = True
            starts = (self.start_s,)
        if self.began and not self.ended and now >= self.end_s + self.min_silence_s:
            self.ended = True
            ends = (TimeRange(self.start_s, self.end_s),)
        in_speech = self.began and not self.ended
        silence = max(0.0, now - self.end_s) if in_speech else 0.0
        return VadUpdate(starts, ends, in_speech, silence)


class ScriptedUtterances:
    """Speech over each of [start, end) seconds of the stream, in order."""

    def __init__(self, *ranges: tuple[float, float]) -> None:
        self.vads = [ScriptedVad(start, end) for start, end in ranges]

    async def feed(self, samples: np.ndarray) -> VadUpdate:
        updates = [await vad.feed(samples) for vad in self.vads]
        current = next((update for update in updates if update.in_speech), updates[-1])
        return VadUpdate(
            tuple(start for update in updates for start in update.speech_starts),
            tuple(end for update in updates for end in update.speech_ends),
            current.in_speech,
            current.trailing_silence_s,
        )


async def run_engine(
    vad: ScriptedVad | ScriptedUtterances,
    total_s: float,
    settings: StreamSettings,
    options: asr_pb2.TranscriptionOptions | None = None,
    decoder: FakeDecoder | None = None,
) -> tuple[list[gateway_pb2.StreamingTranscribeResponse], FakeDecoder, LiveTranscriber, int]:
    decoder = decoder or FakeDecoder()
    responses: list[gateway_pb2.StreamingTranscribeResponse] = []
    engine = LiveTranscriber(
        decoder, vad, options or asr_pb2.TranscriptionOptions(beam_size=5), settings, responses.append
    )
    most_buffered = 0
    block = np.zeros(RATE // 10, dtype=np.float32)
    for _ in range(round(total_s * 10)):
        await engine.feed(block)
        most_buffered = max(most_buffered, engine.buffered_samples)
        await asyncio.sleep(0)
    await engine.finish()
    return responses, decoder, engine, most_buffered


def kinds(responses: list[gateway_pb2.StreamingTranscribeResponse]) -> list[str]:
    return [str(response.WhichOneof("response")) for response in responses]


def test_an_utterance_gets_interims_then_one_final_from_the_likely_final_step() -> None:
    responses, decoder, engine, _ = asyncio.run(
        run_engine(ScriptedVad(1.0, 4.0), 6.0, StreamSettings(interim_results=True))
    )
    order = kinds(responses)
    assert order[0] == "speech_begin" and "interim" in order and order.count("final") == 1
    assert order.index("speech_end") < order.index("final")
    final = next(response.final for response in responses if response.WhichOneof("response") == "final")
    assert final.text.startswith("w0 w1") and final.stability == 1.0
    # The step decoded once the end of speech had been silent for a while covered the whole utterance.
    assert engine.reused_finals == 1
    assert decoder.calls[-1][1] == PRIORITY_FINAL
    interims = [response.interim for response in responses if response.WhichOneof("response") == "interim"]
    assert interims[-1].stability > 0 and interims[-1].stable_text


def test_every_decode_knows_what_the_stream_said_before_it() -> None:
    settings = StreamSettings(interim_results=True)
    responses, decoder, engine, _ = asyncio.run(
        run_engine(
            ScriptedUtterances((1.0, 4.0), (6.0, 9.0)), 11.0, settings, asr_pb2.TranscriptionOptions(beam_size=4)
        )
    )
    finals = [response.final for response in responses if response.WhichOneof("response") == "final"]
    assert len(finals) == 2
    # The stream's options, with words timed, for every decode.
    assert all(beam == 4 and timed for beam, timed, _ in decoder.asked)
    # The first utterance's decodes had no lead-in; the second's were led in
    # by the first's audio, its text as their prefix (and nothing said before that).
    assert decoder.prefixes[0] == "" and decoder.prefixes[-1] == finals[0].text
    assert decoder.calls[-1][0] >= (9.0 - 1.0) * RATE
    assert all(context == "" for _, _, context in decoder.asked)
    # The second final holds only its own words, timed in its own audio.
    assert all(word.start_offset.ToTimedelta().total_seconds() >= 5.8 for word in finals[1].words)
    assert engine.context == f"{finals[0].text} {finals[1].text}"


@pytest.mark.parametrize("interim_results", [True, False])
def test_a_final_that_lost_its_last_words_after_a_lead_in_is_decoded_again_alone(interim_results: bool) -> None:
    settings = StreamSettings(interim_results=interim_results)
    utterances = ScriptedUtterances((1.0, 4.0), (6.0, 9.0))
    decoder = FakeDecoder(stops_early_after_lead_in=True)
    responses, _, engine, _ = asyncio.run(run_engine(utterances, 11.0, settings, decoder=decoder))
    finals = [response.final for response in responses if response.WhichOneof("response") == "final"]
    assert len(finals) == 2 and engine.second_looks == 1
    # The second look had no lead-in, and its words reach the end of the speech.
    assert decoder.prefixes[-1] == ""
    assert finals[1].words[-1].end_offset.ToTimedelta().total_seconds() >= 9.0 - 0.5


def test_without_lead_in_decodes_get_what_was_said_as_context() -> None:
    settings = StreamSettings(interim_results=True, context_audio_s=0.0)
    responses, decoder, _, most_buffered = asyncio.run(
        run_engine(ScriptedUtterances((1.0, 4.0), (6.0, 9.0)), 11.0, settings)
    )
    finals = [response.final for response in responses if response.WhichOneof("response") == "final"]
    assert len(finals) == 2 and not any(decoder.prefixes)
    contexts = [context for _, _, context in decoder.asked]
    assert contexts[0] == "" and contexts[-1] == finals[0].text
    assert most_buffered <= 5.0 * RATE


def test_without_interim_results_a_short_utterance_costs_one_decode() -> None:
    responses, decoder, _, _ = asyncio.run(run_engine(ScriptedVad(1.0, 4.0), 6.0, StreamSettings()))
    assert "interim" not in kinds(responses)
    assert len(decoder.calls) == 1 and kinds(responses).count("final") == 1


def test_long_speech_is_cut_where_steps_agreed_and_memory_stays_bounded() -> None:
    settings = StreamSettings(interim_results=True, max_utterance_s=5.0)
    responses, _, _, most_buffered = asyncio.run(run_engine(ScriptedVad(0.5, 60.0), 62.0, settings))
    finals = [response.final for response in responses if response.WhichOneof("response") == "final"]
    assert len(finals) >= 10
    starts = [final.start_offset.ToTimedelta().total_seconds() for final in finals]
    assert starts == sorted(starts)
    # Never more audio held than one utterance, its lead-in, its roll and a second of slack.
    assert most_buffered <= (settings.max_utterance_s + settings.context_audio_s + 1.5) * RATE


def test_the_streaming_vad_finds_each_utterance_of_real_speech() -> None:
    recording = join_prompts(["agent-loginok", "conf-getconfno", "vm-password"], gap_s=1.5)
    detection = SpeechDetector(bundled_model_path()).start_live(LiveVadOptions())
    starts: list[float] = []
    ends: list[TimeRange] = []
    for offset in range(0, recording.samples.size, 1600):
        update = detection.feed(recording.samples[offset : offset + 1600])
        starts += update.speech_starts
        ends += update.speech_ends
    assert len(starts) == len(ends) == len(recording.utterances)
    # (An utterance's times are its file's, silence at either end included.)
    for utterance, start, end in zip(recording.utterances, starts, ends, strict=True):
        assert utterance.start_s - 0.1 <= start < end.end_s <= utterance.end_s + 0.1
        assert end.end_s - start > 0.3


def test_behind_a_stream_sheds_work_steps_longer_and_without_lead_in() -> None:
    """Long speech, the workers behind (`pressure` 1): fewer, shorter decodes
    (no lead-in for steps that are not likely finals), the finals as before."""
    settings = StreamSettings(interim_results=True, max_utterance_s=8.0)

    def run(pressure: float) -> tuple[list[gateway_pb2.StreamingTranscribeResponse], FakeDecoder]:
        decoder = FakeDecoder()
        decoder.pressure = pressure
        decoder.idle = pressure < 1.0
        responses, decoder, _, _ = asyncio.run(run_engine(ScriptedVad(0.5, 40.0), 42.0, settings, decoder=decoder))
        return responses, decoder

    calm, calm_decoder = run(0.0)
    behind, behind_decoder = run(1.5)
    interim_steps = [call for call in behind_decoder.calls if call[1] != PRIORITY_FINAL]
    calm_interim_steps = [call for call in calm_decoder.calls if call[1] != PRIORITY_FINAL]
    assert len(interim_steps) * 2 <= len(calm_interim_steps)
    # Steps that are not likely finals go without the lead-in: no prefix.
    assert all(
        not prefix
        for prefix, call in zip(behind_decoder.prefixes, behind_decoder.calls, strict=True)
        if call[1] != PRIORITY_FINAL
    )
    # The speech still all comes in finals (the fake hears a word every 0.5 s of each utterance).
    finals = [response.final for response in behind if response.WhichOneof("response") == "final"]
    calm_finals = [response.final for response in calm if response.WhichOneof("response") == "final"]
    assert sum(len(final.words) for final in finals) >= 0.9 * sum(len(final.words) for final in calm_finals)
    ends = [final.end_offset.ToTimedelta().total_seconds() for final in finals]
    assert ends == sorted(ends) and ends[-1] >= 39.0
