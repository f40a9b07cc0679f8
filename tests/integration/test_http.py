"""The HTTP front with OpenAI's own Python client as the caller, on a real suite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.suite_fixtures import RunningSuite
from tests.speech import join_prompts, write_wav
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# The front's own upload limit in these tests (under the suite's).
MAX_UPLOAD_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def http_base(suite: RunningSuite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run = tmp_path_factory.mktemp("http")
    port_file = run / "http.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.http"],
        cwd=ROOT,
        env={
            **os.environ,
            "SUBTITLER_HTTP_PORT": "0",
            "SUBTITLER_HTTP_PORT_FILE": str(port_file),
            "SUBTITLER_GATEWAY_TARGET": suite.suite.target("gateway"),
            "SUBTITLER_HTTP_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        },
        stdout=(run / "http.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None, (run / "http.log").read_text()
            assert time.monotonic() < deadline, "the HTTP front did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert response.status == 200
        yield base
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, (run / "http.log").read_text()[-2000:]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    recording = join_prompts(["agent-loginok", "conf-getconfno", "vm-password"], gap_s=0.8)
    return write_wav(tmp_path_factory.mktemp("speech") / "talk.wav", recording.samples), recording.reference_text


def test_openai_client_transcribes_in_every_response_format(http_base: str, speech: tuple[Path, str]) -> None:
    import openai

    path, reference = speech
    client = openai.OpenAI(base_url=f"{http_base}/v1", api_key="not-needed")
    with path.open("rb") as audio:
        plain = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert word_error_rate(reference, plain.text) <= 0.15, plain.text
    with path.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.language == "en" and verbose.duration > 5
    assert verbose.words and verbose.segments
    starts = [word.start for word in verbose.words]
    assert starts == sorted(starts) and all(word.end >= word.start for word in verbose.words)
    with path.open("rb") as audio:
        srt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    assert "-->" in str(srt) and str(srt).lstrip().startswith("1")
    with path.open("rb") as audio:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="vtt")
    assert str(vtt).startswith("WEBVTT")
    with path.open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    deltas = [event.delta for event in events if event.type == "transcript.text.delta"]
    assert deltas and events[-1].type == "transcript.text.done"  # one delta per segment as it comes
    assert word_error_rate(reference, events[-1].text) <= 0.15
    assert word_error_rate(events[-1].text, "".join(deltas)) <= 0.1
    models = [model.id for model in client.models.list()]
    assert "whisper-1" in models and "embedded:tiny.en" in models


def test_errors_come_back_as_openai_errors_with_the_gateways_message(http_base: str, speech: tuple[Path, str]) -> None:
    import openai

    path, _ = speech
    client = openai.OpenAI(base_url=f"{http_base}/v1", api_key="not-needed", max_retries=0)
    with path.open("rb") as audio, pytest.raises(openai.NotFoundError) as not_found:
        client.audio.transcriptions.create(model="whisper-1", file=audio, language="fr")
    assert "English-only" in str(not_found.value)
    with path.open("rb") as audio, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="doc")  # type: ignore[arg-type]
    assert "response_format" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as not_media:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"not audio at all"))
    assert "Traceback" not in str(not_media.value)


def test_an_upload_over_the_limit_is_413_and_makes_no_job(http_base: str, suite: RunningSuite) -> None:
    import openai

    from subtitler.gateway.v1 import gateway_pb2

    client = openai.OpenAI(base_url=f"{http_base}/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (MAX_UPLOAD_BYTES + 1)))
    assert caught.value.status_code == 413
    assert "SUBTITLER_HTTP_MAX_UPLOAD_BYTES" in str(caught.value)
    # (Other tests' jobs may come and go meanwhile: look for this upload's.)
    jobs = suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs
    assert not [job for job in jobs if job.source == "upload:big.wav"]
