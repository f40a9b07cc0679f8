"""Live sources: a URL decoded as it plays, for live captions.

Only URLs under a configured prefix are opened (`SUBTITLER_AUDIO_LIVE_SOURCES`;
none by default), and that holds for every URL a source leads to:

- **HLS** (a URL ending in .m3u8) is read here, not by FFmpeg's HLS demuxer,
  so that every playlist, variant and segment URL is checked before it is
  fetched (FFmpeg would follow a playlist to any host). The playlist is
  polled while it is live; segments (MPEG-TS, or fragmented MP4 after its
  `EXT-X-MAP`) are fed in order, as one byte stream, to one decoder.
- Anything else (an HTTP stream of a single file, RTSP) is opened by FFmpeg
  with its protocols limited to that URL's scheme family and its demuxers to
  the single-file ones.

Samples come out as 16 kHz mono float32 blocks.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Sequence

import av
import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError, NotFoundError, PermissionDeniedError, UnavailableError
from common.limits import SAMPLE_RATE_HERTZ

logger = logging.getLogger(__name__)

SCHEMES = {"http": "http,https,tcp,tls,crypto", "https": "http,https,tcp,tls,crypto", "rtsp": "rtsp,rtp,udp,tcp"}
MAX_URL_BYTES = 4096
# Largest playlist or segment fetched.
MAX_FETCH_BYTES = 64 * 1024 * 1024
# Blocks handed out: at most this long.
BLOCK_SAMPLES = SAMPLE_RATE_HERTZ // 5

Samples = npt.NDArray[np.float32]


def check_url(url: str, prefixes: Sequence[str]) -> None:
    """PERMISSION_DENIED unless `url` is under one of `prefixes`."""
    if len(url.encode()) > MAX_URL_BYTES or any(ord(character) < 32 for character in url):
        raise InvalidInputError("the live source URL is too long or holds control characters")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in SCHEMES:
        raise InvalidInputError(f"live sources are {', '.join(sorted(SCHEMES))} URLs, not {parsed.scheme or 'a path'}")
    if not prefixes:
        raise PermissionDeniedError(
            "live sources are not enabled on this audio service: set SUBTITLER_AUDIO_LIVE_SOURCES to the URL "
            "prefixes it may open"
        )
    if not any(url.startswith(prefix) for prefix in prefixes):
        raise PermissionDeniedError("that URL is not under a live source prefix this audio service may open")


class _HlsStream(io.RawIOBase):
    """The segments of an HLS playlist, in order, as one byte stream."""

    def __init__(self, url: str, prefixes: Sequence[str], stop: threading.Event, timeout_s: float) -> None:
        self._prefixes = prefixes
        self._stop = stop
        self._timeout_s = timeout_s
        self._playlist_url = url
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._buffer = b""
        self._ended = False
        self._next_poll = 0.0
        self._target_s = 2.0

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            if not self._next_segment():
                return 0
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _fetch(self, url: str) -> bytes:
        check_url(url, self._prefixes)
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
                data: bytes = response.read(MAX_FETCH_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise NotFoundError(f"the live source answered HTTP {error.code} for one of its files") from None
        except (urllib.error.URLError, OSError) as error:
            raise UnavailableError(f"the live source cannot be read: {getattr(error, 'reason', error)}") from None
        if len(data) > MAX_FETCH_BYTES:
            raise InvalidInputError(f"a file of the live source is over {MAX_FETCH_BYTES} bytes")
        return data

    def _next_segment(self) -> bool:
        while not self._pending:
            if self._ended or self._stop.is_set():
                return False
            delay = self._next_poll - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return False
            self._poll()
        url = self._pending.pop(0)
        self._buffer = self._fetch(url)
        return True

    def _poll(self) -> None:
        text = self._fetch(self._playlist_url).decode("utf-8", errors="replace")
        if not text.lstrip().startswith("#EXTM3U"):
            raise InvalidInputError("the live source is not an HLS playlist (no #EXTM3U)")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        variants = [
            lines[position + 1]
            for position, line in enumerate(lines[:-1])
            if line.startswith("#EXT-X-STREAM-INF") and not lines[position + 1].startswith("#")
        ]
        if variants:
            # A master playlist: the first variant (they carry the same audio).
            self._playlist_url = urllib.parse.urljoin(self._playlist_url, variants[0])
            return
        for line in lines:
            if line.startswith("#EXT-X-TARGETDURATION:"):
                self._target_s = max(0.5, float(line.split(":", 1)[1] or 2))
            elif line.startswith("#EXT-X-MAP:") and 'URI="' in line:
                self._queue(line.split('URI="', 1)[1].split('"', 1)[0])
            elif line == "#EXT-X-ENDLIST":
                self._ended = True
            elif not line.startswith("#"):
                self._queue(line)
        self._next_poll = time.monotonic() + self._target_s / 2

    def _queue(self, reference: str) -> None:
        url = urllib.parse.urljoin(self._playlist_url, reference)
        if url not in self._seen:
            self._seen.add(url)
            self._pending.append(url)


def live_samples(
    url: str,
    prefixes: Sequence[str],
    allowed_demuxers: Sequence[str],
    stop: threading.Event,
    *,
    timeout_s: float = 15.0,
    on_open: Callable[[], None] | None = None,
) -> Generator[Samples, None, None]:
    """16 kHz mono float32 blocks of the live source at `url`, until it ends
    or `stop` is set. Raises the suite's errors for a URL it may not open, a
    source that cannot be read or holds no audio."""
    check_url(url, prefixes)
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if urllib.parse.urlsplit(url).path.endswith(".m3u8"):
            container = av.open(
                _HlsStream(url, prefixes, stop, timeout_s),
                mode="r",
                options={"format_whitelist": "mpegts,mov,mp4,m4a,3gp,3g2,mj2,aac,adts,mp3"},
            )
        else:
            container = av.open(
                url,
                timeout=timeout_s,
                options={"protocol_whitelist": SCHEMES[scheme], "format_whitelist": ",".join(allowed_demuxers)},
            )
    except av.error.FFmpegError as error:
        raise UnavailableError(f"the live source cannot be opened: {error.strerror or error}") from None
    with container:
        if not container.streams.audio:
            raise InvalidInputError("the live source has no audio track")
        if on_open is not None:
            on_open()
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HERTZ)
        try:
            for frame in container.decode(container.streams.audio[0]):
                if stop.is_set():
                    return
                for converted in resampler.resample(frame):
                    samples = np.asarray(converted.to_ndarray()[0], dtype=np.float32)
                    for start in range(0, samples.shape[0], BLOCK_SAMPLES):
                        yield np.nan_to_num(samples[start : start + BLOCK_SAMPLES], nan=0.0, posinf=0.0, neginf=0.0)
        except av.error.FFmpegError as error:
            raise UnavailableError(f"the live source broke off: {error.strerror or error}") from None
