"""A job's life: the scheduler that composes intake (creation and admission),
the claim loop (dispatch), the jobs running here and their leases,
cancellation and retention; the pipeline of stage calls for one job (decode,
speech, transcribe, align, diarize) and the units it composes; its audio
lease, admission of new jobs, and the event hub that streams progress."""
