"""`subtitler transcribe` of many files in one process: the files of a batch
and their output names (`inputs`), one progress display for all of them
(`progress`), and the client that sends them to the gateway at once
(`runner`), started by `command` when the command line names several."""
