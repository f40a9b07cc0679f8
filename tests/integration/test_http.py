"""The HTTP front with OpenAI's own Python client as the caller, on a real suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from common.errors import MAX_MESSAGE_BYTES
from tests.integration.suite_fixtures import RunningSuite
from tests.speech import join_prompts, write_wav, write_with_video
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# The front's own upload limit in these tests (under the suite's).
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
# Debian's chromium and its driver (tools/ensure_debian_packages.sh installs them).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Where the browser test leaves its screenshot (ignored by git).
SCREENSHOT_DIR = ROOT / "logs"


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


def _sse(body: str) -> list[tuple[str, str, dict[str, object]]]:
    """(id, event, data) of each server-sent event."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields.get("data", "{}"))))
    return events


def test_jobs_api_uploads_follows_and_renders_a_job(
    http_base: str, speech: tuple[Path, str], suite: RunningSuite
) -> None:
    path, reference = speech
    config = {"transcription": {"language_code": "en"}, "subtitles": {"preset": "SUBTITLE_PRESET_BBC"}}
    with path.open("rb") as audio:
        created = requests.post(
            f"{http_base}/v1/jobs",
            data={"config": json.dumps(config), "request_id": "rest-1"},
            files={"file": ("talk.wav", audio, "audio/wav")},
            timeout=60,
        )
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["Location"] == f"/v1/jobs/{job['job_id']}"
    assert job["config"]["transcription"]["language_code"] == "en" and job["source"] == "upload:talk.wav"
    # Events as server-sent events, to the end of the job.
    streamed = requests.get(f"{http_base}/v1/jobs/{job['job_id']}/events", timeout=300)
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    events = _sse(streamed.text)
    assert events[-1][1] == "end"
    kinds = [kind for _, kind, _ in events[:-1]]
    assert {"state", "stage_progress", "segment", "aligned"} <= set(kinds)
    ids = [int(sequence) for sequence, _, _ in events[:-1]]
    assert ids == sorted(ids) and ids[0] == 1
    assert events[-2][2]["state"] == "JOB_STATE_SUCCEEDED"
    # Resuming after an event id replays only what came after it.
    resumed = _sse(
        requests.get(
            f"{http_base}/v1/jobs/{job['job_id']}/events", headers={"Last-Event-ID": str(ids[-2])}, timeout=60
        ).text
    )
    assert [int(sequence) for sequence, _, _ in resumed[:-1]] == [ids[-1]]
    finished = requests.get(f"{http_base}/v1/jobs/{job['job_id']}", timeout=30).json()
    assert finished["state"] == "JOB_STATE_SUCCEEDED"
    srt = requests.get(f"{http_base}/v1/jobs/{job['job_id']}/result", params={"format": "srt"}, timeout=30)
    assert srt.headers["Content-Type"].startswith("application/x-subrip") and "-->" in srt.text
    vtt = requests.get(
        f"{http_base}/v1/jobs/{job['job_id']}/result",
        params={"format": "vtt", "preset": "short-video", "max_line_chars": "20", "download": "1"},
        timeout=30,
    )
    assert vtt.text.startswith("WEBVTT") and "attachment" in vtt.headers["Content-Disposition"]
    cue_lines = [line for line in vtt.text.splitlines() if line and "-->" not in line and line != "WEBVTT"]
    assert all(len(line) <= 20 for line in cue_lines if not line.isdigit()), cue_lines
    document = requests.get(f"{http_base}/v1/jobs/{job['job_id']}/result", params={"format": "json"}, timeout=30)
    assert word_error_rate(reference, document.json()["text"]) <= 0.15
    listed = requests.get(f"{http_base}/v1/jobs", params={"state": "succeeded", "page_size": "1000"}, timeout=30)
    assert job["job_id"] in {item["job_id"] for item in listed.json()["jobs"]}
    # The same request id gives the same job, not a second one.
    with path.open("rb") as audio:
        again = requests.post(
            f"{http_base}/v1/jobs", data={"request_id": "rest-1"}, files={"file": ("talk.wav", audio)}, timeout=60
        )
    assert again.json()["job_id"] == job["job_id"]


def test_jobs_api_creates_from_a_path_cancels_and_refuses_bad_requests(http_base: str, suite: RunningSuite) -> None:
    # The gateway may not see the audio host's files: a missing one fails the job, saying so.
    missing = requests.post(f"{http_base}/v1/jobs", json={"path": "no-such-file.wav"}, timeout=30)
    assert missing.status_code == 201, missing.text
    events = _sse(requests.get(f"{http_base}/v1/jobs/{missing.json()['job_id']}/events", timeout=60).text)
    failed = events[-2][2]
    assert failed["state"] == "JOB_STATE_FAILED" and failed["error"]["code"] == "NOT_FOUND", failed
    assert "no-such-file.wav" in failed["error"]["message"]
    recording = join_prompts(["agent-loginok"] * 6, gap_s=0.5)
    write_wav(suite.media_dir / "rest-long.wav", recording.samples)
    created = requests.post(f"{http_base}/v1/jobs", json={"path": "rest-long.wav", "priority": -5}, timeout=30)
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    cancelled = requests.post(f"{http_base}/v1/jobs/{job_id}/cancel", timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "JOB_STATE_CANCELLED"
    early = requests.get(f"{http_base}/v1/jobs/{job_id}/result", timeout=30)
    assert early.status_code == 409 and "cancelled" in early.json()["error"]["message"]
    for method, url, kwargs, status in [
        ("get", "/v1/jobs/nope", {}, 404),
        ("get", "/v1/jobs/nope/events", {}, 404),
        ("get", f"/v1/jobs/{job_id}/result?format=doc", {}, 400),
        ("get", f"/v1/jobs/{job_id}/result?format=srt&colour=red", {}, 400),
        ("get", "/v1/jobs?state=sleeping", {}, 400),
        ("post", "/v1/jobs", {"json": {"path": "rest-long.wav", "config": {"transcription": {"beam": 5}}}}, 400),
        ("post", "/v1/jobs", {"json": {"file": "x"}}, 400),
        ("post", "/v1/jobs", {"data": b"plain", "headers": {"Content-Type": "text/plain"}}, 415),
        ("post", "/v1/jobs", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ]:
        answer = getattr(requests, method)(f"{http_base}{url}", timeout=30, **kwargs)
        assert answer.status_code == status, (url, answer.text)
        assert answer.json()["error"]["message"] and "Traceback" not in answer.text


def test_openapi_document_is_valid_and_lists_every_route(http_base: str) -> None:
    from openapi_spec_validator import validate

    document = requests.get(f"{http_base}/openapi.json", timeout=30).json()
    validate(document)
    assert {
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/models",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/result",
        "/v1/jobs/{job_id}/events",
    } <= set(document["paths"])


def test_web_page_transcribes_a_video_and_plays_it_with_its_subtitles(
    http_base: str, tmp_path: Path, suite: RunningSuite
) -> None:
    """Debian's chromium, headless, through selenium: choose a real
    recording (an MP4 with a picture), watch the segments appear, and check
    the cues of the video's text track. Saves a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    recording = join_prompts(["agent-loginok", "conf-getconfno", "vm-password"], gap_s=0.8)
    video = write_with_video(tmp_path / "talk.mp4", recording.samples)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,1400", "--mute-audio"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{http_base}/")
        assert driver.title == "subtitler"
        driver.find_element(By.ID, "file").send_keys(str(video))
        driver.find_element(By.ID, "language").send_keys("English")
        driver.find_element(By.ID, "start").click()
        wait = WebDriverWait(driver, 300)
        # Segments show while the job runs, then the job ends.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#segments li"))
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state"))
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "succeeded", driver.find_element(
            By.ID, "error"
        ).text
        # Each item is its times, then its text.
        shown = " ".join(
            item.text.removeprefix(item.find_element(By.CLASS_NAME, "time").text).strip()
            for item in driver.find_elements(By.CSS_SELECTOR, "#segments li")
        )
        assert word_error_rate(recording.reference_text, shown) <= 0.2, shown
        assert not driver.find_elements(By.CSS_SELECTOR, "#segments li.draft"), "every segment is aligned"
        # The video plays the file with the job's WebVTT as its text track.
        cues = wait.until(
            lambda d: d.execute_script(
                "const t = document.querySelector('#player').textTracks[0];"
                "return t && t.cues && t.cues.length ?"
                " Array.from(t.cues, c => [c.startTime, c.endTime, c.text]) : null;"
            )
        )
        cue_text = " ".join(text for _, _, text in cues)
        assert word_error_rate(recording.reference_text, cue_text) <= 0.2, cue_text
        assert all(end > start for start, end, _ in cues) and cues == sorted(cues)
        duration = wait.until(lambda d: d.execute_script("return document.querySelector('#player').duration || null"))
        assert duration == pytest.approx(recording.samples.size / 16_000, abs=0.5)
        links = {
            link.text: link.get_attribute("href") for link in driver.find_elements(By.CSS_SELECTOR, "#downloads a")
        }
        assert set(links) == {"SRT", "WebVTT", "JSON"}
        assert "-->" in requests.get(links["SRT"], timeout=30).text
        # Seek into the first cue, so the screenshot shows a subtitle over the picture.
        driver.execute_script("document.querySelector('#player').currentTime = arguments[0];", cues[0][0] + 0.5)
        wait.until(lambda d: d.execute_script("return !document.querySelector('#player').seeking"))
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT_DIR / "web_page.png"))
    finally:
        driver.quit()


def test_live_page_captions_the_microphone(http_base: str, tmp_path: Path) -> None:
    """Chromium's fake microphone plays a real recording into the live page,
    which streams it over /v1/live: finals appear, and Stop ends the stream
    with its summary."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    recording = join_prompts(["conf-getconfno", "vm-password"], gap_s=1.0)
    # Silence first: the fake microphone plays from the start, before the socket is open.
    padded = np.concatenate([np.zeros(32_000, np.float32), recording.samples, np.zeros(48_000, np.float32)])
    microphone = write_wav(tmp_path / "microphone.wav", padded)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{http_base}/live")
        driver.find_element(By.ID, "start").click()
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "listening")
        words = len(recording.reference_text.split())

        def finals() -> str:
            texts = driver.execute_script(
                "return Array.from(document.querySelectorAll('#finals p'), p => p.lastChild.textContent);"
            )
            return " ".join(texts)

        wait.until(lambda d: len(finals().split()) >= words)
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ended")
        heard = " ".join(finals().split()[:words])
        assert word_error_rate(recording.reference_text, heard) <= 0.3, (recording.reference_text, heard)
        assert not driver.find_element(By.ID, "error").text
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT_DIR / "live_page.png"))
    finally:
        driver.quit()


def test_live_socket_refuses_a_bad_config_with_a_message(http_base: str) -> None:
    import asyncio

    import aiohttp

    async def run() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{http_base}/v1/live") as socket:
            await socket.send_str(json.dumps({"encoding": "AUDIO_ENCODING_FLOAT32", "sample_rate_hertz": 5}))
            return [json.loads(message.data) async for message in socket if message.type == aiohttp.WSMsgType.TEXT]

    messages = asyncio.run(run())
    assert messages and "error" in messages[-1], messages
    assert "sample_rate_hertz" in str(messages[-1]["error"]) and "Traceback" not in str(messages)


def test_the_front_counts_its_requests_by_route_at_its_metrics(http_base: str, speech: tuple[Path, str]) -> None:
    requests.get(f"{http_base}/v1/jobs/no-such-job", timeout=30)
    text = requests.get(f"{http_base}/metrics", timeout=30).text
    assert 'subtitler_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in text
    assert 'route="/v1/audio/transcriptions",status="200"' in text  # the OpenAI tests before this one
    assert "subtitler_http_request_duration_seconds_bucket" in text


def _form_with_file_name(disposition_file_name: bytes, media: bytes) -> tuple[bytes, str]:
    """A multipart form of one file whose Content-Disposition names it with
    `disposition_file_name` (the header's bytes as they are: a client may send any)."""
    boundary = "subtitler-test-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; '
        + disposition_file_name
        + b"\r\nContent-Type: audio/wav\r\n\r\n"
        + media
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("disposition_file_name", "said"),
    [
        (b"filename*=UTF-8''talk%00.wav", "the file name has a control character (U+0000)"),
        (b"filename*=UTF-8''two%0Alines.wav", "the file name has a control character (U+000A)"),
        # A control character as it is in the part's header: the header is refused.
        (b'filename="bell\x07.wav"', "the request cannot be read: Invalid HTTP header"),
    ],
    ids=["nul", "line-break", "raw-bell"],
)
@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/audio/transcriptions"])
def test_an_upload_whose_file_name_has_a_control_character_is_a_400(
    http_base: str, speech: tuple[Path, str], suite: RunningSuite, route: str, disposition_file_name: bytes, said: str
) -> None:
    from subtitler.gateway.v1 import gateway_pb2

    jobs_before = len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)
    body, content_type = _form_with_file_name(disposition_file_name, speech[0].read_bytes())
    answer = requests.post(f"{http_base}{route}", data=body, headers={"Content-Type": content_type}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["error"]["message"]
    assert len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs) == jobs_before


def test_a_huge_job_id_in_a_path_is_a_short_400(http_base: str) -> None:
    for job_id in ("f" * 7000, "..%2F..%2Fjobs", "%00"):
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/events"):
            answer = requests.get(f"{http_base}{path}", timeout=30)
            assert answer.status_code == 400, answer.text[:300]
            message = answer.json()["error"]["message"]
            assert message.startswith("job id must be") and len(message.encode()) <= MAX_MESSAGE_BYTES
        cancelled = requests.post(f"{http_base}/v1/jobs/{job_id}/cancel", timeout=30)
        assert cancelled.status_code == 400, cancelled.text[:300]
    # Longer than a request line may be: refused by the server before any handler, not with a 500.
    answer = requests.get(f"{http_base}/v1/jobs/{'f' * 1_000_000}", timeout=30)
    assert 400 <= answer.status_code < 500 and len(answer.content) <= 4 * MAX_MESSAGE_BYTES
    # A message that echoes a form field is bounded too.
    form: dict[str, tuple[str | None, bytes]] = {"priority": (None, b"x" * 100_000), "file": ("a.wav", b"RIFF")}
    answer = requests.post(f"{http_base}/v1/jobs", files=form, timeout=30)
    assert answer.status_code == 400, answer.text[:300]
    message = answer.json()["error"]["message"]
    assert message.startswith("priority 'xxx") and len(message.encode()) <= MAX_MESSAGE_BYTES


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/audio/transcriptions"])
def test_a_form_that_cannot_be_read_is_a_400(http_base: str, route: str) -> None:
    file_part = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--zz--\r\n'
    for content_type, body, said in [
        ("multipart/form-data", file_part, "the form cannot be read: boundary missed"),
        ("multipart/form-data; boundary=zz", b"no parts at all", "the form cannot be read: Could not find starting"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nno-colon\r\n\r\nabc\r\n--zz--\r\n", "Invalid HTTP header"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="request_id"\r\n\r\n\xff\xfe\r\n' + file_part,
            "form field 'request_id' is not text in utf-8",
        ),
    ]:
        answer = requests.post(f"{http_base}{route}", data=body, headers={"Content-Type": content_type}, timeout=30)
        assert answer.status_code == 400, answer.text
        assert said in answer.json()["error"]["message"]
    config_first = b'--zz\r\nContent-Disposition: form-data; name="config"\r\n\r\n{not json\r\n' + file_part
    answer = requests.post(
        f"{http_base}/v1/jobs",
        data=config_first,
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "form field 'config' is not valid JSON"
