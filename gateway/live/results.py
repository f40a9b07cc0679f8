"""The responses of a live stream, built from the engine's samples and
hypotheses: speech begin and end, interim results (the text so far, its agreed
part and their ratio) and finals (words timed in the stream)."""

from __future__ import annotations

from dataclasses import dataclass

from common.limits import SAMPLE_RATE_HERTZ
from common.rpc.convert import seconds_to_duration, word_to_proto
from common.transcript import Word
from gateway.live.decoder import Hypothesis
from subtitler.gateway.v1 import gateway_pb2

Response = gateway_pb2.StreamingTranscribeResponse


def speech_begin(offset_s: float) -> Response:
    return Response(speech_begin=gateway_pb2.SpeechActivity(offset=seconds_to_duration(offset_s)))


def speech_end(offset_s: float) -> Response:
    return Response(speech_end=gateway_pb2.SpeechActivity(offset=seconds_to_duration(offset_s)))


def interim(utterance_index: int, start: int, end: int, hypothesis: Hypothesis, agreed: int) -> Response:
    """The interim result of a step over samples [start, end) of the stream
    whose first `agreed` words two steps agreed on."""
    words = hypothesis.words
    return Response(
        interim=gateway_pb2.StreamingResult(
            text=hypothesis.text,
            start_offset=seconds_to_duration(start / SAMPLE_RATE_HERTZ),
            end_offset=seconds_to_duration(end / SAMPLE_RATE_HERTZ),
            stability=agreed / len(words) if words else 0.0,
            stable_text=" ".join(word.text for word in words[:agreed]),
            utterance_index=utterance_index,
            language_code=hypothesis.language_code,
        )
    )


@dataclass(frozen=True)
class FinalResult:
    """A final to send: its text and its response."""

    text: str
    response: Response


def final(utterance_index: int, start: int, end: int, hypothesis: Hypothesis) -> FinalResult | None:
    """The final of samples [start, end) of the stream, its words timed in
    the stream and kept inside that audio; None when it holds no text."""
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
        return None
    response = Response(
        final=gateway_pb2.StreamingResult(
            text=text,
            start_offset=seconds_to_duration(words[0].start_s if words else offset_s),
            end_offset=seconds_to_duration(words[-1].end_s if words else end_s),
            words=[word_to_proto(word) for word in words],
            stability=1.0,
            stable_text=text,
            utterance_index=utterance_index,
            language_code=hypothesis.language_code,
        )
    )
    return FinalResult(text, response)
