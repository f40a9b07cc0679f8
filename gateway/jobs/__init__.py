"""A job's life: the scheduler that claims and runs jobs, the pipeline of stage calls for one job
(decode, speech, transcribe, align, diarize) and the units it composes, its audio lease, admission
of new jobs, and the event hub that streams progress."""
