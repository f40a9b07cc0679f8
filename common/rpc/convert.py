"""Conversions between protobuf messages and the domain types of
`common.transcript`, in one place so every servicer stays thin."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from common.transcript import Segment, TimeRange, Word, doubt_flags
from subtitler.common.v1 import common_pb2


def seconds_to_duration(seconds: float) -> Duration:
    """A Duration of `seconds`, rounded to the microsecond."""
    micros = round(seconds * 1_000_000)
    return Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def datetime_to_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def epoch_to_timestamp(epoch_s: float) -> Timestamp:
    whole = math.floor(epoch_s)
    return Timestamp(seconds=whole, nanos=int((epoch_s - whole) * 1e9))


def timestamp_to_epoch(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def time_range_to_proto(time_range: TimeRange) -> common_pb2.TimeRange:
    return common_pb2.TimeRange(
        start_offset=seconds_to_duration(time_range.start_s),
        end_offset=seconds_to_duration(time_range.end_s),
    )


def time_range_from_proto(message: common_pb2.TimeRange) -> TimeRange:
    return TimeRange(duration_to_seconds(message.start_offset), duration_to_seconds(message.end_offset))


def word_to_proto(word: Word) -> common_pb2.Word:
    return common_pb2.Word(
        text=word.text,
        start_offset=seconds_to_duration(word.start_s),
        end_offset=seconds_to_duration(word.end_s),
        probability=word.probability,
        interpolated=word.interpolated,
    )


def word_from_proto(message: common_pb2.Word) -> Word:
    return Word(
        text=message.text,
        start_s=duration_to_seconds(message.start_offset),
        end_s=duration_to_seconds(message.end_offset),
        probability=message.probability,
        interpolated=message.interpolated,
    )


def segment_to_proto(segment: Segment) -> common_pb2.Segment:
    return common_pb2.Segment(
        text=segment.text,
        start_offset=seconds_to_duration(segment.start_s),
        end_offset=seconds_to_duration(segment.end_s),
        words=[word_to_proto(word) for word in segment.words],
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        compression_ratio=segment.compression_ratio,
        chunk_index=segment.chunk_index,
        flags=doubt_flags(segment),
        speaker=segment.speaker,
    )


def segment_from_proto(message: common_pb2.Segment) -> Segment:
    return Segment(
        text=message.text,
        start_s=duration_to_seconds(message.start_offset),
        end_s=duration_to_seconds(message.end_offset),
        words=tuple(word_from_proto(word) for word in message.words),
        avg_logprob=message.avg_logprob,
        no_speech_prob=message.no_speech_prob,
        compression_ratio=message.compression_ratio,
        chunk_index=message.chunk_index,
        speaker=message.speaker,
    )


def segments_to_proto(segments: Iterable[Segment]) -> list[common_pb2.Segment]:
    return [segment_to_proto(segment) for segment in segments]


def segments_from_proto(messages: Iterable[common_pb2.Segment]) -> list[Segment]:
    return [segment_from_proto(message) for message in messages]
