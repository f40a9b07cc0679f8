"""Speech engine pieces only the ASR and align services use (and the names and languages the
gateway checks): Whisper model loading, word times from an aligner, snapping times to sound."""
