"""One job's run through the stage services: the pipeline and the units it composes (decode and
audio lease, speech detection, language settling, transcription dispatch with the coverage
check's second look, alignment, diarization), stage calls under the retry policy, progress and
the run's state restored from its checkpoint. Imports nothing of the scheduler around it."""
