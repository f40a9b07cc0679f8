"""Command-line client of the gateway.

    python -m gateway.cli transcribe talk.mp4 -o talk.srt [--format vtt] [--language fr] [--model ...]
    python -m gateway.cli transcribe a.mp4 b.mp4 clips/ 'more/*.wav' --output-dir subs/ [options as above]
    python -m gateway.cli jobs | status JOB | watch JOB | result JOB -o out.vtt | cancel JOB | system

`transcribe` uploads the file (or, with --server-path, names a file on the
audio service's host), shows a progress bar fed by the job's event stream,
writes the result, and exits non-zero with the server's message on error.
Several files, a folder or a pattern go to gateway.cli.batch, which sends them
all at once and writes each output into --output-dir as it is done.
"""

from __future__ import annotations

import sys

import grpc

from gateway.cli import live as live_cli
from gateway.cli.arguments import CliError, UsageError, parser, subtitle_rules, subtitle_rules_given
from gateway.cli.batch import command as batch_command
from gateway.cli.commands import describe, finish, system, transcribe
from gateway.cli.connection import BearerToken, open_gateway_channel
from gateway.cli.progress import ProgressBar, watch
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.command == "transcribe" and batch_command.is_batch(options):
        return batch_command.run(options)
    with open_gateway_channel(options.gateway, options.tls_ca) as plain:
        channel = grpc.intercept_channel(plain, BearerToken(options.token)) if options.token else plain
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            if options.command == "transcribe":
                return transcribe(stub, options)
            if options.command == "live":
                return live_cli.run_live(stub, options)
            if options.command == "system":
                return system(channel)
            if options.command == "jobs":
                for job in stub.ListJobs(gateway_pb2.ListJobsRequest()).jobs:
                    print(describe(job))
                return 0
            if options.command == "status":
                print(describe(stub.GetJob(gateway_pb2.GetJobRequest(job_id=options.job_id))))
                return 0
            if options.command == "watch":
                job = watch(stub, options.job_id, ProgressBar(sys.stderr))
                print(describe(job))
                return 0 if job.state == gateway_pb2.JOB_STATE_SUCCEEDED else 1
            if options.command == "cancel":
                print(describe(stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=options.job_id))))
                return 0
            job = stub.GetJob(gateway_pb2.GetJobRequest(job_id=options.job_id))
            # Other rules than the job's: laid out again, no model runs.
            rules = subtitle_rules(options) if subtitle_rules_given(options) else None
            return finish(stub, job, options.format, options.output, rules)
        except grpc.RpcError as error:
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            details = error.details() if hasattr(error, "details") else str(error)
            if code == "UNAVAILABLE":
                details = f"cannot reach the gateway at {options.gateway} ({details}); is `make run` running?"
            print(f"error: {code}: {details}", file=sys.stderr)
            return 1
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (CliError, live_cli.LiveError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if options.command == "live":
                print("\ninterrupted; the stream is closed", file=sys.stderr)
                return 130
            print("\ninterrupted; the job goes on in the gateway (cancel it with `cancel JOB`)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
