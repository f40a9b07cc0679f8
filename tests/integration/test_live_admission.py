"""Live streams under measured capacity: the gateway takes as many streams
as its ASR workers hold at the latency targets, from the live decode time
the ASR service measured on this machine, and refuses the next one at once
with a retry hint; a stream that falls behind in a load spike catches up.
The ASR is made slow here for real (one worker, Whisper's whole 30 s window
for every decode: conftest's `whole_window_suite`), so the limit is small."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from common.rpc.convert import duration_to_seconds
from gateway.live.admission import LIVE_LOAD
from subtitler.gateway.v1 import gateway_pb2
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.integration.suite_fixtures import RunningSuite
from tests.integration.test_live import PROMPTS, config, linear16, live_figures, run_stream, silence_stream
from tests.speech import join_prompts
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def measured(live: RunningSuite) -> tuple[status_pb2.MeasuredCapacity, status_pb2.MeasuredCapacity]:
    """The gateway's measured capacity and its ASR peer's."""
    reply = status_pb2_grpc.StatusServiceStub(live.channel).GetStatus(
        status_pb2.GetStatusRequest(include_peers=True), timeout=10
    )
    asr = next(peer for peer in reply.peers if peer.service_name == "asr")
    return reply.measured_capacity, asr.measured_capacity


def test_streams_are_admitted_up_to_the_measured_capacity_and_the_next_is_refused_at_once(
    whole_window_suite: RunningSuite,
) -> None:
    deadline = time.monotonic() + 15  # (the gateway asks its ASR every 2 s until it has a measure)
    while not (gateway_measure := measured(whole_window_suite)[0]).live_decode_s and time.monotonic() < deadline:
        time.sleep(0.2)
    gateway_measure, asr_measure = measured(whole_window_suite)
    assert asr_measure.live_decode_s > 0.0 and asr_measure.source.startswith("warm-up")
    assert gateway_measure.live_decode_s == pytest.approx(asr_measure.live_decode_s)
    held = gateway_measure.live_streams
    assert held == max(1, LIVE_LOAD.streams(1, asr_measure.live_decode_s))
    stop = threading.Event()
    calls = []
    try:
        for _ in range(held):
            sent = threading.Event()
            calls.append(whole_window_suite.gateway.StreamingTranscribe(silence_stream(stop, sent), timeout=120))
            assert sent.wait(10)
        deadline = time.monotonic() + 10
        while live_figures(whole_window_suite)[0] < held and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            list(
                whole_window_suite.gateway.StreamingTranscribe(
                    iter([gateway_pb2.StreamingTranscribeRequest(config=config())])
                )
            )
        assert time.monotonic() - started < 1.0
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"holds {held} live streams" in caught.value.details()
        assert "measured" in caught.value.details()
        assert dict(caught.value.trailing_metadata() or ()).get("retry-after-s")
        # One stream ends: a new one is admitted.
        calls.pop().cancel()
        deadline = time.monotonic() + 10
        while live_figures(whole_window_suite)[0] >= held and time.monotonic() < deadline:
            time.sleep(0.1)
        sent = threading.Event()
        calls.append(whole_window_suite.gateway.StreamingTranscribe(silence_stream(stop, sent), timeout=120))
        assert sent.wait(10)
        time.sleep(0.5)
        assert not calls[-1].done()  # admitted: not refused
    finally:
        stop.set()
        for call in calls:
            call.cancel()


def _burn_cpu(until: float) -> None:
    while time.monotonic() < until:
        pass


def test_a_stream_behind_in_a_load_spike_catches_up(whole_window_suite: RunningSuite) -> None:
    """Eight processes take the CPUs from the ASR for 8 s while a stream
    talks: its finals fall behind, then, the spike over, the stream catches
    up (it sheds steps and lead-ins rather than queueing them) and its last
    utterances' finals are back under the 2 s target."""
    import multiprocessing

    speech = join_prompts([*PROMPTS, *PROMPTS], gap_s=1.5)
    spike_s = (4.0, 12.0)
    started = time.monotonic()
    hogs = [
        multiprocessing.get_context("spawn").Process(target=_burn_cpu, args=(started + spike_s[1],)) for _ in range(8)
    ]

    def spike() -> None:
        time.sleep(spike_s[0])
        for hog in hogs:
            hog.start()

    threading.Thread(target=spike, daemon=True).start()
    try:
        received = run_stream(whole_window_suite.gateway, config(), linear16(speech.samples), speed=1.0)
    finally:
        for hog in hogs:
            hog.join(timeout=30)
    assert received.error is None, received.error
    finals = [
        (duration_to_seconds(response.final.end_offset), at)
        for at, response in received.responses
        if response.WhichOneof("response") == "final"
    ]
    assert len(finals) >= len(speech.utterances) - 1
    latencies = [at - end_s for end_s, at in finals]
    during = [
        latency for (end_s, _), latency in zip(finals, latencies, strict=True) if spike_s[0] <= end_s <= spike_s[1]
    ]
    after = [latency for (end_s, _), latency in zip(finals, latencies, strict=True) if end_s >= spike_s[1] + 8.0]
    assert after, finals
    # Behind in the spike (it was a real one) ...
    assert max(during, default=0.0) > 1.0, latencies
    # ... and caught up after it.
    assert max(after) <= 2.0, latencies
    assert word_error_rate(speech.reference_text, received.final_text) <= 0.25
