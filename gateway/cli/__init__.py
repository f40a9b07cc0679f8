"""The `subtitler` command: a gRPC client of the gateway (one file, many files, live captions, job
commands). Imports no server module."""
