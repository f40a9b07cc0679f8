"""The public API of the suite: jobs that turn media into subtitles."""
