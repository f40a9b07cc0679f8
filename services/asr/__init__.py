"""ASR service: Whisper transcription of speech chunks with faster-whisper / CTranslate2, batched."""
