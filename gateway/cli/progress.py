"""A job's progress on the terminal: the bar fed by its event stream, which
watching picks up again when the stream breaks."""
from __future__ import annotations

import shutil
import time
from typing import TextIO

import grpc

from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

# Times a broken watch stream is picked up again before giving up.
MAX_WATCH_RECONNECTS = 8


MAX_FIRST_CONNECT_TRIES = 2


STAGE_NAMES = {
    gateway_pb2.STAGE_UNSPECIFIED: "",
    gateway_pb2.STAGE_DECODE: "decode",
    gateway_pb2.STAGE_DETECT_SPEECH: "detect speech",
    gateway_pb2.STAGE_TRANSCRIBE: "transcribe",
    gateway_pb2.STAGE_ALIGN: "align",
    gateway_pb2.STAGE_DIARIZE: "speakers",
}


class ProgressBar:
    """One line redrawn in place on a terminal, never wider than it: the
    bar, the percentage, the stage (or the queue position), the time so far
    and an estimate of the time left, and the end of the latest text, cut
    at a word; a line per stage otherwise."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._last_stage = ""
        self._last_text = ""
        self._started = time.monotonic()
        self._queue_position = 0

    def update(self, event: gateway_pb2.JobEvent, stage: str) -> None:
        if not self._enabled:
            return
        if event.HasField("segment"):
            self._last_text = event.segment.text.strip()
        if event.WhichOneof("detail") == "queue_position":
            self._queue_position = event.queue_position
        if event.state != gateway_pb2.JOB_STATE_QUEUED:
            self._queue_position = 0
        if self._tty:
            self._stream.write("\r\x1b[K" + self.line(event.progress, stage))
            self._stream.flush()
        elif stage and stage != self._last_stage:
            self._stream.write(f"{event.progress:4.0%} {stage}\n")
            self._stream.flush()
        if stage:
            self._last_stage = stage

    def line(self, progress: float, stage: str, columns: int | None = None) -> str:
        width = (columns or shutil.get_terminal_size((80, 24)).columns) - 1
        elapsed_s = time.monotonic() - self._started
        doing = f"queued, #{self._queue_position}" if self._queue_position else stage
        timing = clock(elapsed_s)
        if 0.05 < progress < 1.0:
            timing += f", ~{clock(elapsed_s * (1 - progress) / progress)} left"
        bar_width = max(10, min(30, width // 4))
        head = f"{bar_text(progress, bar_width)} {doing:<13} {timing}"
        room = width - len(head) - 1
        text = self._last_text
        if room < 8 or not text:
            return head[:width]
        if len(text) > room:
            # The end of the text, from a word's start.
            text = "…" + text[len(text) - room + 1 :].split(" ", 1)[-1]
        return f"{head} {text}"[:width]

    def close(self) -> None:
        if self._enabled and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def bar_text(progress: float, bar_width: int) -> str:
    """[#####-----]  50%: `progress` (0 to 1) as a bar of `bar_width` cells and a percentage."""
    filled = int(progress * bar_width)
    return f"[{'#' * filled}{'-' * (bar_width - filled)}] {progress:4.0%}"


def clock(seconds: float) -> str:
    """m:ss (minutes past 59 go on counting: 75:00)."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def watch(stub: gateway_pb2_grpc.GatewayServiceStub, job_id: str, bar: ProgressBar) -> gateway_pb2.Job:
    """Follows the job's events to its end. A stream that breaks (the gateway
    restarts) is picked up again after the last event seen."""
    stage = ""
    last_sequence = 0
    reconnects = 0
    while True:
        try:
            request = gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=last_sequence)
            # Not wait_for_ready: a gateway that is down is retried a few
            # times (it may be restarting), then reported, never waited on for ever.
            for event in stub.WatchJob(request):
                last_sequence = event.sequence
                reconnects = 0
                if event.HasField("stage_progress"):
                    stage = STAGE_NAMES.get(event.stage_progress.stage, "")
                elif event.waiting_reason:
                    stage = "waiting"
                bar.update(event, stage)
            break
        except grpc.RpcError as error:
            # A gateway never reached is reported after a few seconds; one
            # that went away mid-job gets longer to come back.
            limit = MAX_WATCH_RECONNECTS if last_sequence else MAX_FIRST_CONNECT_TRIES
            if error.code() != grpc.StatusCode.UNAVAILABLE or reconnects >= limit:
                raise
            reconnects += 1
            time.sleep(min(5.0, 0.5 * 2**reconnects))
    bar.close()
    return stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), wait_for_ready=True, timeout=60)
