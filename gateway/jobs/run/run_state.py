"""What one job's run has produced so far: its speech chunks, their
transcripts and alignments, the speaker turns; restored from the job's
checkpoint when it resumes after a restart, and put together into the job's
segments at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.transcript import Segment, TimeRange
from gateway.output.speakers import assign_speakers, turns_from_proto
from gateway.store.stage_outputs import Checkpoint
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2


@dataclass(frozen=True)
class SpeechChunk:
    """A chunk of the audio the VAD found, as the ASR is asked to transcribe it."""

    index: int
    time_range: TimeRange
    # The VAD's speech ranges merged into the chunk (for the coverage check).
    speech: tuple[TimeRange, ...] = ()


@dataclass
class RunState:
    """The stage outputs of one job's run, shared by its stage units."""

    chunks: list[SpeechChunk] = field(default_factory=list)
    detection_done: bool = False
    # Seconds of the audio the VAD has looked at so far.
    analysed_s: float = 0.0
    transcripts: dict[int, list[Segment]] = field(default_factory=dict)
    aligned: dict[int, list[Segment]] = field(default_factory=dict)
    # The diarization, once done (or restored from the checkpoint).
    speaker_turns: diarize_pb2.DiarizeResponse | None = None
    # Whether the checkpoint held a finished detection (it is not run again).
    restored_detection: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint | None) -> RunState:
        """The outputs a resumed job stored before it stopped (none for a new job)."""
        if checkpoint is None:
            return cls()
        return cls(
            chunks=[
                SpeechChunk(index, checkpoint.speech_chunks[index], checkpoint.speech_ranges.get(index, ()))
                for index in sorted(checkpoint.speech_chunks)
            ],
            speaker_turns=checkpoint.speaker_turns,
            restored_detection=checkpoint.detection_complete,
            transcripts={index: segments for index, (_, segments) in checkpoint.transcripts.items()},
            aligned={index: segments for index, (_, segments) in checkpoint.alignments.items()},
        )

    def resume_summary(self, audio_reused: bool) -> gateway_pb2.ResumeSummary:
        """What a resumed job takes up again (published to its watchers)."""
        return gateway_pb2.ResumeSummary(
            audio_reused=audio_reused,
            detection_reused=self.restored_detection,
            transcribed_chunk_count=len(self.transcripts),
            aligned_chunk_count=len(self.aligned),
        )

    def chunks_to_come(self, audio_duration_s: float) -> float | None:
        """Chunks the VAD has still to find, at the rate it found them so
        far; None before it has found any."""
        if self.detection_done:
            return 0.0
        if self.analysed_s <= 0.0 or not self.chunks:
            return None
        rest_s = max(0.0, audio_duration_s - self.analysed_s)
        return len(self.chunks) / self.analysed_s * rest_s

    def segments(self, skip_alignment: bool) -> list[Segment]:
        """The job's segments in chunk order: the aligned ones (the
        transcripts when alignment is skipped), with their speakers once
        diarized."""
        order = [chunk.index for chunk in self.chunks]
        source = self.transcripts if skip_alignment else self.aligned
        segments = [segment for index in order for segment in source[index]]
        if self.speaker_turns is not None:
            segments = assign_speakers(segments, turns_from_proto(self.speaker_turns))
        return segments
