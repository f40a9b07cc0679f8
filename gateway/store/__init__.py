"""Where jobs are kept: the job store (queue, leases, checkpoints, results, events) over SQLite or PostgreSQL."""
