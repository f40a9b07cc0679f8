"""The VAD service: finds speech in decoded audio with silero VAD and streams it
as chunks of time ranges ready for Whisper."""
