"""The settings of one live stream (`StreamSettings`) and the bounds a client
may ask for them."""

from __future__ import annotations

from dataclasses import dataclass

# Whisper's window, less the audio kept around an utterance.
MAX_UTTERANCE_S = 28.0
# The longest lead-in a stream may ask for (StreamingConfig.context_audio_duration).
MAX_CONTEXT_AUDIO_S = 20.0


@dataclass(frozen=True)
class StreamSettings:
    interim_results: bool = False
    # An utterance is made final at this length even if speech goes on.
    max_utterance_s: float = 15.0
    # New audio between two decodes of a growing utterance.
    step_s: float = 1.0
    # ... and when the workers are behind (`Decoder.pressure` 1 or more): the
    # step grows towards this with the pressure, so long speech costs fewer
    # decodes and the stream catches up instead of queueing.
    max_step_s: float = 3.0
    # Speech before the first decode of an utterance.
    first_step_s: float = 0.4
    # Audio kept before the start of speech and after its end.
    pre_roll_s: float = 0.2
    post_roll_s: float = 0.2
    # Silence at the end of the audio after which the utterance is decoded
    # at once, as a likely final.
    final_silence_s: float = 0.2
    # An utterance at least this long makes every sentence two steps agreed
    # on final at once (long speech without pauses).
    sentence_commit_s: float = 6.0
    # Audio of the last finals decoded again before each utterance, their
    # text forced as the transcript's start (0: none).
    context_audio_s: float = 10.0
