"""The batch's progress line: files, audio done of the total (estimated
from sizes until decoded), and the time left."""

from __future__ import annotations

import io

from common.rpc.convert import seconds_to_duration
from gateway.cli.batch.progress import (
    BatchProgress,
    BatchTotals,
    FileProgress,
    batch_totals,
    hours_clock,
    summary_line,
    time_left_s,
)
from subtitler.gateway.v1 import gateway_pb2


def totals(**fields: object) -> BatchTotals:
    defaults: dict[str, object] = dict(
        files_total=16,
        files_finished=6,
        files_failed=1,
        audio_done_s=62.0,
        audio_total_s=160.0,
        audio_total_estimated=True,
    )
    return BatchTotals(**{**defaults, **fields})  # type: ignore[arg-type]


def test_the_line_shows_files_audio_and_time_left() -> None:
    line = summary_line(totals(), elapsed_s=21.0, columns=120)
    assert line.startswith("[")
    assert " 39% " in line
    assert "7/16 files (1 failed)" in line
    assert "0:01:02 of ~0:02:40 audio" in line
    # 62 of 160 s of audio in 21 s: 98 s more at that rate take 33 s.
    assert line.endswith("0:21, ~0:33 left")
    assert summary_line(totals(), 21.0, 140, note="gateway full").endswith("~0:33 left  gateway full")


def test_the_line_fits_the_terminal_and_says_when_nothing_is_decoded() -> None:
    line = summary_line(totals(audio_done_s=0.0, audio_total_s=0.0, files_finished=0, files_failed=0), 3.0, 60)
    assert len(line) <= 59
    assert "0/16 files" in line and "audio not decoded yet" in line and "left" not in line


def test_no_time_left_before_there_is_a_rate_to_go_by() -> None:
    assert time_left_s(totals(audio_done_s=0.0), 10.0) is None
    assert time_left_s(totals(audio_done_s=1.0, audio_total_s=1000.0), 10.0) is None
    assert time_left_s(totals(audio_done_s=160.0), 10.0) is None
    assert time_left_s(totals(audio_done_s=80.0), 10.0) == 10.0


def test_hours_clock_counts_hours() -> None:
    assert hours_clock(0.4) == "0:00:00"
    assert hours_clock(62) == "0:01:02"
    assert hours_clock(3 * 3600 + 5) == "3:00:05"


def test_undecoded_files_are_estimated_from_their_size_and_failed_ones_leave_the_totals() -> None:
    files = [
        FileProgress(size_bytes=32_000, audio_s=1.0, fraction=1.0, finished=True),
        FileProgress(size_bytes=96_000, audio_s=3.0, fraction=0.5),
        FileProgress(size_bytes=64_000),  # not decoded: 2 s at 32 kB/s
        FileProgress(size_bytes=1_000_000, failed=True),
    ]
    summed = batch_totals(files)
    assert (summed.files_total, summed.files_finished, summed.files_failed) == (4, 1, 1)
    assert summed.audio_done_s == 2.5
    assert summed.audio_total_s == 6.0 and summed.audio_total_estimated


def test_files_of_unknown_size_are_estimated_at_the_decoded_mean() -> None:
    files = [FileProgress(0, audio_s=10.0), FileProgress(0, audio_s=20.0), FileProgress(0)]
    assert batch_totals(files).audio_total_s == 45.0


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_and_results_above_it() -> None:
    now = [0.0]
    terminal = FakeTerminal()
    progress = BatchProgress(terminal, [32_000, 32_000], now=lambda: now[0])
    event = gateway_pb2.JobEvent(progress=0.5, audio_duration=seconds_to_duration(1.0))
    progress.update(0, event)
    now[0] = 0.05
    progress.update(0, event)  # too soon after the last draw: not drawn
    assert terminal.getvalue().count("\r\x1b[K") == 1
    now[0] = 1.0
    progress.finished(0, 1.0, "wrote out/a.srt")
    progress.close()
    lines = terminal.getvalue().split("\r\x1b[K")
    assert "wrote out/a.srt\n" in lines
    assert lines[-1].startswith("[") and "1/2 files" in lines[-1] and lines[-1].endswith("\n")


def test_plain_output_gets_a_line_per_file_and_quiet_gets_none() -> None:
    plain = io.StringIO()
    progress = BatchProgress(plain, [10, 10])
    progress.update(0, gateway_pb2.JobEvent(progress=0.3))
    progress.failed(1, "failed b.wav: INVALID_ARGUMENT: not media")
    progress.close()
    assert plain.getvalue().count("\n") == 1 and plain.getvalue().endswith(
        "failed b.wav: INVALID_ARGUMENT: not media\n"
    )
    quiet = io.StringIO()
    silent = BatchProgress(quiet, [10], enabled=False)
    silent.finished(0, 1.0, "wrote a.srt")
    silent.close()
    assert quiet.getvalue() == ""
