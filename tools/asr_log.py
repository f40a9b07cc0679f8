"""Which chunks a job asked the ASR for, read from the ASR replicas' JSON logs.

At the start of every Transcribe call the ASR service logs "transcribing
chunks A-B" with the job id and request id bound (by the server's
interceptor, from the x-job-id and x-request-id metadata), and at its end the
canonical "rpc" line with the same request id and the final status code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tools.suite import Suite

_TRANSCRIBING = re.compile(r"transcribing chunks (\d+)-(\d+)")


@dataclass(frozen=True)
class AsrRequest:
    """One Transcribe call as the ASR replica that served it logged it."""

    replica: str
    request_id: str
    chunks: range
    start_time: datetime
    # The call's final status code name; None while it runs, or if the
    # replica died before it ended.
    code: str | None
    # TranscribeRequest.scheduling's name and last_of_job.
    scheduling: str = ""
    last_of_job: bool = False


def asr_requests(suite: Suite, job_id: str) -> list[AsrRequest]:
    """Every Transcribe call of a job, over every ASR replica, in the order they started."""
    requests = []
    for replica in suite.instances("asr"):
        records = suite.log_records(replica)
        codes = {
            record["request_id"]: record["code"]
            for record in records
            if record.get("event") == "rpc" and record.get("method") == "Transcribe"
        }
        for record in records:
            match = _TRANSCRIBING.fullmatch(str(record.get("event")))
            if match and record.get("job_id") == job_id:
                requests.append(
                    AsrRequest(
                        replica,
                        record["request_id"],
                        range(int(match[1]), int(match[2]) + 1),
                        datetime.fromisoformat(record["timestamp"]),
                        codes.get(record["request_id"]),
                        str(record.get("scheduling", "")),
                        bool(record.get("last_of_job", False)),
                    )
                )
    return sorted(requests, key=lambda request: request.start_time)


def requested_chunks(requests: Iterable[AsrRequest]) -> Counter[int]:
    """How many times each chunk index was asked for."""
    return Counter(index for request in requests for index in request.chunks)


def cut_off_chunks(requests: Iterable[AsrRequest]) -> set[int]:
    """Chunks of the calls that did not end OK (a kill or a failure cut them off)."""
    return {index for request in requests if request.code != "OK" for index in request.chunks}


_DECODED = re.compile(r"decoded chunks (\d+)-(\d+) in ([0-9.]+) s")


@dataclass(frozen=True)
class AsrBusy:
    """The time the ASR replicas spent decoding a job's chunks."""

    # Decoding time summed over calls (worker-seconds).
    worker_s: float
    # Wall time during which at least one call was decoding.
    busy_wall_s: float
    calls: int


def asr_busy(suite: Suite, job_id: str) -> AsrBusy:
    """From the "decoded chunks A-B in S s" lines every ASR replica logs at the end of a call."""
    intervals: list[tuple[float, float]] = []
    for replica in suite.instances("asr"):
        for record in suite.log_records(replica):
            match = _DECODED.fullmatch(str(record.get("event")))
            if match and record.get("job_id") == job_id:
                end_s = datetime.fromisoformat(record["timestamp"]).timestamp()
                intervals.append((end_s - float(match[3]), end_s))
    busy_wall_s = 0.0
    covered_until = float("-inf")
    for start_s, end_s in sorted(intervals):
        if end_s > covered_until:
            busy_wall_s += end_s - max(start_s, covered_until)
            covered_until = end_s
    return AsrBusy(sum(end - start for start, end in intervals), busy_wall_s, len(intervals))
