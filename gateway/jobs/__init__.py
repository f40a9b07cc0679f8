"""Jobs: the scheduler that composes intake (creation and admission), the
claim loop (dispatch), the jobs running here and their leases, outcomes,
cancellation and retention, and the event hub that streams progress. One
job's run through the stage services is `run/`, which imports none of these
but the event hub."""
