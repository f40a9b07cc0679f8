"""The commands on one job and on the suite: transcribe a file, write a
result, describe jobs and the services' status."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

from common.rpc.convert import duration_to_seconds
from gateway.cli.arguments import EXTENSIONS, FORMATS, CliError, UsageError, build_config
from gateway.cli.connection import upload_requests
from gateway.cli.progress import ProgressBar, watch
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc


def write_output(content: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(content)
        return
    target = Path(output)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(target)


def finish(
    stub: gateway_pb2_grpc.GatewayServiceStub,
    job: gateway_pb2.Job,
    fmt: str,
    output: str,
    rules: gateway_pb2.SubtitleOptions | None = None,
) -> int:
    if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
        state = gateway_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        if job.HasField("error"):
            raise CliError(f"job {job.job_id} {state}: {job.error.code}: {job.error.message}")
        raise CliError(f"job {job.job_id} {state}")
    request = gateway_pb2.GetResultRequest(job_id=job.job_id, format=FORMATS[fmt])
    if rules is not None:
        request.subtitles.CopyFrom(rules)
    result = stub.GetResult(request)
    write_output(result.content, output)
    if output != "-":
        audio_s = duration_to_seconds(job.audio_duration)
        took_s = duration_to_seconds(job.processing_duration)
        print(
            f"wrote {output}: {len(result.segments)} segments, {audio_s:.1f} s of audio"
            f" ({result.language_code or 'unknown language'}) in {took_s:.1f} s",
            file=sys.stderr,
        )
    return 0


def check_output(output: str) -> None:
    """Refuses, before anything is uploaded, an output the result could not be written to."""
    if output == "-":
        return
    target = Path(output)
    if target.is_dir():
        raise UsageError(f"-o {output}: is a directory; name a file")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"-o {output}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"-o {output}: cannot write there (permission denied or a read-only file system)")


def transcribe(stub: gateway_pb2_grpc.GatewayServiceStub, options: argparse.Namespace) -> int:
    config = build_config(options)
    [source] = options.files
    output = options.output or str(Path(Path(source).name).with_suffix(EXTENSIONS[options.format]))
    check_output(output)
    if options.server_path:
        job = stub.CreateJob(
            gateway_pb2.CreateJobRequest(
                path=source, config=config, request_id=options.request_id or "", priority=options.priority
            )
        )
    else:
        path = Path(source)
        if not path.is_file():
            raise CliError(f"no such file: {path}")
        job = stub.UploadMedia(upload_requests(path, config, options.request_id or "", options.priority))
    print(f"job {job.job_id}", file=sys.stderr)
    bar = ProgressBar(sys.stderr, enabled=not options.quiet)
    job = watch(stub, job.job_id, bar)
    return finish(stub, job, options.format, output)


def describe(job: gateway_pb2.Job) -> str:
    state = gateway_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    line = (
        f"{job.job_id}  {state:<9} {job.progress:4.0%}  {duration_to_seconds(job.audio_duration):7.1f} s  {job.source}"
    )
    if job.HasField("error"):
        line += f"  [{job.error.code}: {job.error.message}]"
    return line


def describe_status(status: status_pb2.GetStatusResponse) -> list[str]:
    """A service's status as lines for a terminal."""
    lines = [
        f"{status.service_name} (version {status.version}, up {status.uptime_s:.0f} s): "
        f"capacity {status.capacity}, running {status.running}, queued {status.queued}"
        + (f", preferred batch {status.preferred_batch_size}" if status.preferred_batch_size else "")
    ]
    lines += [f"  {key}: {value}" for key, value in sorted(status.hardware.items())]
    lines += [f"  warning: {warning}" for warning in status.hardware_warnings]
    lines.append(f"  CPU affinity: {status.cpu_affinity or 'not pinned'} ({status.cpu_affinity_message})")
    lines += [f"  {setting.name}={setting.value}  [{setting.source}]" for setting in status.settings]
    if status.loaded_models:
        lines.append(f"  models loaded: {', '.join(status.loaded_models)}")
    if status.HasField("measured_capacity"):
        lines.append(f"  measured: {describe_measured(status.measured_capacity)}")
    if status.queue_wait_s:
        lines.append(f"  a job submitted now waits about {status.queue_wait_s:.0f} s for its turn")
    return lines


def describe_measured(measured: status_pb2.MeasuredCapacity) -> str:
    """What a service measured it gets through, as one line."""
    parts = []
    if measured.audio_seconds_per_second:
        parts.append(f"{measured.audio_seconds_per_second:.1f} s of a file's audio a second")
    if measured.live_decode_s:
        parts.append(f"{measured.live_decode_s:.3f} s a live decode")
    if measured.live_streams:
        parts.append(f"{measured.live_streams} live streams held")
    return f"{', '.join(parts) or 'nothing yet'} ({measured.source or 'not measured yet'})"


def system(channel: grpc.Channel) -> int:
    """Prints what every service detected and chose."""
    reply = status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(include_peers=True), timeout=10
    )
    for status in (reply, *reply.peers):
        print("\n".join(describe_status(status)))
    for unreachable in reply.unreachable_peers:
        print(f"unreachable: {unreachable}")
    return 0 if not reply.unreachable_peers else 1
