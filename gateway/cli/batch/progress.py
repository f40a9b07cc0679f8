"""One progress display for a whole batch: files done of the total, audio
done of the total, the time so far and an estimate of the time left. It is
one line redrawn in place on a terminal (each file's result printed above
it as it ends), a plain line per file that ends otherwise, nothing when
disabled (-q)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from common.rpc.convert import duration_to_seconds
from gateway.cli.progress import bar_text, clock
from subtitler.gateway.v1 import gateway_pb2

# Fastest redraw on a terminal: the events of a hundred jobs need not each draw.
MIN_REDRAW_INTERVAL_S = 0.1


@dataclass
class FileProgress:
    """What the display knows of one file."""

    size_bytes: int
    # The decoded audio's duration; 0 until the gateway has decoded it.
    audio_s: float = 0.0
    # The job's progress, 0 to 1.
    fraction: float = 0.0
    finished: bool = False
    failed: bool = False


@dataclass(frozen=True)
class BatchTotals:
    """The batch at one moment, summed over its files."""

    files_total: int
    files_finished: int
    files_failed: int
    audio_done_s: float
    # Decoded durations, plus an estimate for the files not decoded yet
    # (see _estimated_audio_s); 0 until a file is decoded.
    audio_total_s: float
    audio_total_estimated: bool


def batch_totals(files: Sequence[FileProgress]) -> BatchTotals:
    """The sums of `files`; a failed file's audio leaves both audio sums."""
    counted = [file for file in files if not file.failed]
    decoded = [file for file in counted if file.audio_s > 0]
    undecoded = [file for file in counted if file.audio_s <= 0]
    decoded_s = sum(file.audio_s for file in decoded)
    estimate_s = sum(_estimated_audio_s(file, decoded) for file in undecoded)
    return BatchTotals(
        files_total=len(files),
        files_finished=sum(file.finished for file in files),
        files_failed=len(files) - len(counted),
        audio_done_s=sum(file.audio_s * (1.0 if file.finished else file.fraction) for file in decoded),
        audio_total_s=decoded_s + estimate_s,
        audio_total_estimated=bool(undecoded) and estimate_s > 0,
    )


def _estimated_audio_s(file: FileProgress, decoded: Sequence[FileProgress]) -> float:
    """The audio in a file not decoded yet: its size at the decoded files'
    bytes per second, or their mean duration when sizes are unknown (server paths)."""
    if not decoded:
        return 0.0
    decoded_bytes = sum(other.size_bytes for other in decoded)
    decoded_s = sum(other.audio_s for other in decoded)
    if file.size_bytes > 0 and decoded_bytes > 0:
        return file.size_bytes * decoded_s / decoded_bytes
    return decoded_s / len(decoded)


def time_left_s(totals: BatchTotals, elapsed_s: float) -> float | None:
    """The time left at the audio rate so far, once there is one to go by."""
    if totals.audio_total_s <= 0 or totals.audio_done_s <= 0:
        return None
    done = totals.audio_done_s / totals.audio_total_s
    if not 0.02 < done < 1.0:
        return None
    return elapsed_s * (1.0 - done) / done


def hours_clock(seconds: float) -> str:
    """h:mm:ss, for durations of audio from seconds to days."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def summary_line(totals: BatchTotals, elapsed_s: float, columns: int, note: str = "") -> str:
    """[####------]  40%  6/16 files (1 failed)  0:01:02 of ~0:02:40 audio  0:21, ~0:32 left  `note`"""
    width = columns - 1
    if totals.audio_total_s > 0:
        fraction = min(1.0, totals.audio_done_s / totals.audio_total_s)
        about = "~" if totals.audio_total_estimated else ""
        audio = f"{hours_clock(totals.audio_done_s)} of {about}{hours_clock(totals.audio_total_s)} audio"
    else:
        fraction = totals.files_finished / max(1, totals.files_total)
        audio = "audio not decoded yet"
    files = f"{totals.files_finished + totals.files_failed}/{totals.files_total} files"
    if totals.files_failed:
        files += f" ({totals.files_failed} failed)"
    timing = clock(elapsed_s)
    left_s = time_left_s(totals, elapsed_s)
    if left_s is not None:
        timing += f", ~{clock(left_s)} left"
    bar_width = max(10, min(30, width // 5))
    line = f"{bar_text(fraction, bar_width)}  {files}  {audio}  {timing}"
    return (f"{line}  {note}" if note else line)[:width]


class BatchProgress:
    """The display of one batch, fed by its files' job events and ends."""

    def __init__(
        self,
        stream: TextIO,
        sizes_bytes: Sequence[int],
        enabled: bool = True,
        now: Callable[[], float] = time.monotonic,
        *,
        failed_before_start: int = 0,
    ) -> None:
        """`sizes_bytes`: the size of each file sent (0: unknown); `failed_before_start`:
        the command line's arguments that gave no file to send, counted as failed files."""
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._now = now
        self._started = now()
        self._drawn_at = float("-inf")
        self.files = [FileProgress(size) for size in sizes_bytes]
        self.files += [FileProgress(0, failed=True) for _ in range(failed_before_start)]
        # The gateway refuses the batch's next jobs for now (it is full).
        self.gateway_full = False

    def update(self, index: int, event: gateway_pb2.JobEvent) -> None:
        """Takes in a job event of file `index`."""
        file = self.files[index]
        file.fraction = max(file.fraction, event.progress)
        if event.WhichOneof("detail") == "audio_duration":
            file.audio_s = duration_to_seconds(event.audio_duration)
        self.redraw()

    def finished(self, index: int, audio_s: float, message: str) -> None:
        """File `index` is written; `message` says where."""
        file = self.files[index]
        file.finished, file.fraction, file.audio_s = True, 1.0, audio_s or file.audio_s
        self._tell(message)

    def failed(self, index: int, message: str) -> None:
        self.files[index].failed = True
        self._tell(message)

    def line(self, columns: int | None = None) -> str:
        columns = columns or shutil.get_terminal_size((100, 24)).columns
        note = "gateway full: waiting for room" if self.gateway_full else ""
        return summary_line(batch_totals(self.files), self._now() - self._started, columns, note)

    def redraw(self) -> None:
        """Draws the line again on a terminal, at most every MIN_REDRAW_INTERVAL_S."""
        if not (self._enabled and self._tty) or self._now() - self._drawn_at < MIN_REDRAW_INTERVAL_S:
            return
        self._drawn_at = self._now()
        self._stream.write("\r\x1b[K" + self.line())
        self._stream.flush()

    def _tell(self, message: str) -> None:
        if not self._enabled:
            return
        if self._tty:
            self._stream.write(f"\r\x1b[K{message}\n")
            self._drawn_at = float("-inf")
            self.redraw()
        else:
            self._stream.write(f"{self.line(columns=200)}  {message}\n")
            self._stream.flush()

    def close(self) -> None:
        if self._enabled and self._tty:
            self._drawn_at = float("-inf")
            self.redraw()
            self._stream.write("\n")
            self._stream.flush()
