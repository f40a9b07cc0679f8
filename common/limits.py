"""Limits and defaults that more than one process of the suite relies on,
defined once. The gateway refuses at create what a stage service would refuse
later, and both import these figures from here. Plain numbers and no imports:
the gateway (which has no numpy) and every engine can import this module.
"""

from __future__ import annotations

# Audio.
SAMPLE_RATE_HERTZ = 16_000
"""The only sample rate the suite's audio has: decoded audio, VAD, ASR, align, diarize."""

# Transcription (services/asr): what a Transcribe request may ask for.
MAX_CHUNK_DURATION_S = 30.0
"""Whisper's window: a speech chunk longer than this would be cut."""
MAX_BEAM_SIZE = 16
DEFAULT_BEAM_SIZE = 5
"""The beam a request that leaves it 0 gets (faster-whisper's default)."""
MAX_TEMPERATURE = 1.0
"""Sampling temperatures worth asking for (faster-whisper's own fallback goes up to 1)."""
MAX_CHUNKS_PER_REQUEST = 32
"""Chunks one Transcribe request may carry (16 minutes of 30 s chunks)."""
MAX_CONTEXT_CHARS = 2000
"""Characters of text said before a chunk a request may give (its context)."""
MAX_PREFIX_CHARS = 600
"""Characters of text a chunk's audio is known to begin with (its prefix): forced
as the start of its transcript, it must fit the first half of Whisper's
448-token window with room to spare."""
DEFAULT_MAX_BATCH_SIZE = 32
"""SUBTITLER_ASR_MAX_BATCH_SIZE's default: the largest batch a job may ask for."""
CALLS_PER_WORKER = 2
"""Calls in flight per ASR model worker: one decoding, one on its way, so a
worker never waits for the gateway between batches (the ASR holds as many)."""

# Speech detection (services/vad).
VAD_FRAME_SAMPLES = 512
"""Samples per silero frame (32 ms): the time resolution of every boundary."""
VAD_FRAME_S = VAD_FRAME_SAMPLES / SAMPLE_RATE_HERTZ
LIVE_MAX_MIN_SILENCE_S = 10.0
"""The longest silence that may be asked to end a live utterance."""

# Diarization (services/diarize).
MAX_SPEAKERS = 20

# Uploads (gateway, audio service and their clients).
UPLOAD_CHUNK_BYTES = 1024 * 1024
"""Bytes of media per UploadMedia message a client sends."""
