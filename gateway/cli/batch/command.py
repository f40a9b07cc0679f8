"""`subtitler transcribe a.mp4 b.mp4 clips/ 'more/*.wav' --output-dir DIR`:
the command line checked, the files found and named, the batch run, and a
list of the files that failed at the end (exit 1 if any did)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import grpc

from gateway.cli.arguments import EXTENSIONS, UsageError, build_config
from gateway.cli.batch.inputs import InputProblem, expand_inputs, is_pattern, output_names
from gateway.cli.batch.progress import BatchProgress
from gateway.cli.batch.runner import BatchRunner, BatchSettings, FileOutcome
from gateway.cli.connection import gateway_credentials
from subtitler.gateway.v1 import gateway_pb2_grpc

# How long the gateway may take to answer at all before the batch gives up on it.
CONNECT_TIMEOUT_S = 10.0
# The gateway's bound on request ids (gateway.api.validation), less the '/' and
# 16-character hash each file's id adds.
MAX_REQUEST_ID_PREFIX_CHARS = 128 - 17


def is_batch(options: argparse.Namespace) -> bool:
    """Whether `transcribe` was given several files, a folder, a pattern or --output-dir."""
    if len(options.files) > 1 or options.output_dir:
        return True
    [source] = options.files
    return not options.server_path and (Path(source).is_dir() or is_pattern(source))


def check_usage(options: argparse.Namespace) -> Path:
    """The output folder, created if missing; UsageError for a command line that cannot work."""
    if options.output:
        raise UsageError("-o names one output file; for several files, a folder or a pattern use --output-dir DIR")
    if not options.output_dir:
        raise UsageError("several files, a folder or a pattern need --output-dir DIR (their outputs are named there)")
    if len(options.request_id or "") > MAX_REQUEST_ID_PREFIX_CHARS:
        raise UsageError(f"--request-id: at most {MAX_REQUEST_ID_PREFIX_CHARS} characters for a batch")
    output_dir = Path(options.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--output-dir {output_dir}: {error.strerror or error}") from None
    if not os.access(output_dir, os.W_OK):
        raise UsageError(
            f"--output-dir {output_dir}: cannot write there (permission denied or a read-only file system)"
        )
    return output_dir


def run(options: argparse.Namespace) -> int:
    """Runs the batch; 0 when every file was written, 1 when any failed, 2 for a usage error."""
    try:
        output_dir = check_usage(options)
    except UsageError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    problems: list[InputProblem] = []
    if options.server_path:  # names on the server's host: sent as they are
        files = [Path(source) for source in options.files]
    else:
        files, problems = expand_inputs(options.files)
    extension = EXTENSIONS.get(options.format, f".{options.format}")
    settings = BatchSettings(
        config=build_config(options),
        result_format=options.format,
        output_dir=output_dir,
        server_paths=options.server_path,
        request_id=options.request_id or "",
        priority=options.priority,
        call_metadata=(("authorization", f"Bearer {options.token}"),) if options.token else (),
    )
    progress = BatchProgress(
        sys.stderr,
        [_size_bytes(file, options.server_path) for file in files],
        not options.quiet,
        failed_before_start=len(problems),
    )
    try:
        outcomes = (
            asyncio.run(_run_batch(options.gateway, options.tls_ca, settings, files, extension, progress))
            if files
            else []
        )
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; the jobs already uploaded go on in the gateway (see `jobs`)\n")
        return 130
    except ConnectionError as error:
        sys.stderr.write(f"error: UNAVAILABLE: {error}; is `make run` running?\n")
        return 1
    finally:
        progress.close()
    return report(outcomes, problems, output_dir, sys.stderr, quiet=options.quiet)


def _size_bytes(file: Path, server_path: bool) -> int:
    """The file's size, for the progress display's audio estimate; 0 when unknown."""
    if server_path:
        return 0
    try:
        return file.stat().st_size
    except OSError:
        return 0


async def _run_batch(
    address: str,
    ca_file: str,
    settings: BatchSettings,
    files: list[Path],
    extension: str,
    progress: BatchProgress,
) -> list[FileOutcome]:
    credentials = gateway_credentials(ca_file)
    channel = (
        grpc.aio.insecure_channel(address) if credentials is None else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ConnectionError(f"cannot reach the gateway at {address}") from None
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        runner = BatchRunner(stub, settings, files, output_names(files, extension), progress)
        return await runner.run()


def report(
    outcomes: Sequence[FileOutcome],
    problems: Sequence[InputProblem],
    output_dir: Path,
    stream: TextIO,
    quiet: bool = False,
) -> int:
    """Writes what became of the batch: a summary line (not when quiet), then
    each failed file with its status and message; 0 when none failed."""
    failures = [(problem.argument, problem.status, problem.message) for problem in problems]
    failures += [(outcome.source, outcome.status, outcome.message) for outcome in outcomes if not outcome.succeeded]
    written = sum(outcome.succeeded for outcome in outcomes)
    if not quiet:
        stream.write(f"{written} of {written + len(failures)} files written to {output_dir}\n")
    if failures:
        stream.write(f"{len(failures)} failed:\n")
        source_width = max(len(source) for source, _, _ in failures)
        status_width = max(len(status) for _, status, _ in failures)
        for source, status, message in failures:
            stream.write(f"  {source:<{source_width}}  {status:<{status_width}}  {message}\n")
    stream.flush()
    return 1 if failures else 0
