"""`subtitler transcribe` of many files in one process, against the real
suite: outputs named after inputs, bad files listed while the rest finish,
folders, patterns, name clashes, and a gateway too small to take the batch
at once (its refusals are waited out)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from subtitler.gateway.v1 import gateway_pb2
from tests.integration.suite_fixtures import RunningSuite
from tests.speech import ASTERISK_SOUNDS_DIR, build_long_recording, speech_available, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech_available(), reason="needs asterisk-core-sounds-en-wav (make test-data)"),
]

ROOT = Path(__file__).resolve().parents[2]
# Short prompts (about 2 s each), so a batch takes seconds.
PROMPTS = ("vm-goodbye", "conf-extended", "vm-leavemsg", "please-try-call-later")
TOKEN = "batch-client-token-0123456789"


def recording(name: str) -> Path:
    return ASTERISK_SOUNDS_DIR / f"{name}.wav"


def run_cli(gateway: str, *arguments: str, timeout_s: float = 300, token: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--gateway", gateway, "--token", token, "transcribe", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def job_count(suite: RunningSuite) -> int:
    return len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)


def test_a_batch_writes_each_output_and_lists_the_bad_files(suite: RunningSuite, tmp_path: Path) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("a text file, not audio\n")
    good = [recording(name) for name in PROMPTS[:3]]
    out = tmp_path / "out"
    done = run_cli(
        suite.suite.target("gateway"),
        *map(str, good[:2]),
        str(not_audio),
        str(tmp_path / "missing.wav"),
        str(good[2]),
        "--output-dir",
        str(out),
        "--language",
        "en",
    )
    assert done.returncode == 1, done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{path.stem}.srt" for path in good)
    for path in good:
        assert "-->" in (out / f"{path.stem}.srt").read_text(), path
    failures = done.stderr[done.stderr.index("2 failed:") :].splitlines()[1:]
    statuses = {line.split()[0]: line.split()[1] for line in failures}
    assert statuses == {str(not_audio): "INVALID_ARGUMENT", str(tmp_path / "missing.wav"): "NOT_FOUND"}, done.stderr
    assert "3 of 5 files written" in done.stderr and "Traceback" not in done.stderr


def test_a_folder_and_a_pattern_with_clashing_names(suite: RunningSuite, tmp_path: Path) -> None:
    for folder, name in (("a", PROMPTS[0]), ("b", PROMPTS[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(recording(name), tmp_path / folder / "x.wav")
    shutil.copy(recording(PROMPTS[2]), tmp_path / "a" / "y.WAV")
    (tmp_path / "a" / "readme.txt").write_text("not media: a folder's other files are left alone\n")
    out = tmp_path / "out"
    done = run_cli(
        suite.suite.target("gateway"),
        str(tmp_path / "a"),
        str(tmp_path / "b" / "*.wav"),  # a pattern the shell did not expand
        "--output-dir",
        str(out),
        "--format",
        "text",
        "-q",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == ["a/x.txt", "b/x.txt", "y.txt"]
    assert all((out / name).read_text().strip() for name in written)


def test_several_files_need_an_output_dir(suite: RunningSuite, tmp_path: Path) -> None:
    jobs_before = job_count(suite)
    files = [str(recording(name)) for name in PROMPTS[:2]]
    for extra in ([], ["-o", str(tmp_path / "out.srt")], ["-o", "x.srt", "--output-dir", str(tmp_path)]):
        refused = run_cli(suite.suite.target("gateway"), *files, *extra, timeout_s=60)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: ") and "--output-dir" in refused.stderr
    folder = run_cli(suite.suite.target("gateway"), str(ASTERISK_SOUNDS_DIR), timeout_s=60)
    assert folder.returncode == 2 and "--output-dir" in folder.stderr
    assert job_count(suite) == jobs_before


@pytest.fixture
def small_gateway(suite: RunningSuite, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A second gateway on the suite's stage services that runs one job at
    a time and queues none: every job sent while one runs is refused
    (RESOURCE_EXHAUSTED, retry in 30 s). It takes calls with TOKEN only.
    Its address and log."""
    port_file = tmp_path / "small.port"
    log = tmp_path / "small-gateway.log"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"batch:{TOKEN}\n")
    env = {
        **suite.suite.environment("gateway"),
        "SUBTITLER_GATEWAY_PORT": "0",
        "SUBTITLER_GATEWAY_PORT_FILE": str(port_file),
        "SUBTITLER_GATEWAY_METRICS_PORT_FILE": str(tmp_path / "small.metrics-port"),
        "SUBTITLER_GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "SUBTITLER_GATEWAY_STORE": "",
        "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS": "1",
        "SUBTITLER_GATEWAY_MAX_QUEUED_JOBS": "0",
        "SUBTITLER_GATEWAY_TOKENS_FILE": str(tokens),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the small gateway did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port_file.read_text().strip()}", log
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_a_full_gateway_is_waited_for_not_failed(small_gateway: tuple[str, Path], tmp_path: Path) -> None:
    address, log = small_gateway
    out = tmp_path / "out"
    # One file long enough (30 s of speech, seconds to transcribe) that the
    # uploads sent beside it meet a full gateway whatever the machine's pace:
    # short prompts alone may each finish before the next upload arrives.
    long = write_wav(tmp_path / "long.wav", build_long_recording(30.0).samples)
    inputs = [str(long), *(str(recording(name)) for name in PROMPTS)]
    started = time.monotonic()
    done = run_cli(address, *inputs, "--output-dir", str(out), "-q", token=TOKEN)
    took_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(["long.srt", *(f"{name}.srt" for name in PROMPTS)])
    refusals = [line for line in log.read_text().splitlines() if "UploadMedia" in line and "RESOURCE_EXHAUSTED" in line]
    assert refusals, "the gateway never refused: the test did not test waiting"
    # A refused upload goes again when one of the batch's jobs ends, not
    # after the gateway's 30 s hint each time.
    assert took_s < 60, took_s


def test_server_paths_are_sent_as_they_are(suite: RunningSuite, tmp_path: Path) -> None:
    for name in PROMPTS[:2]:
        shutil.copy(recording(name), suite.media_dir / f"batch-{name}.wav")
    out = tmp_path / "out"
    names = [f"batch-{name}.wav" for name in PROMPTS[:2]]
    done = run_cli(suite.suite.target("gateway"), *names, "no-such.wav", "--server-path", "--output-dir", str(out))
    assert done.returncode == 1, done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(f"batch-{name}.srt" for name in PROMPTS[:2])
    assert "no-such.wav  NOT_FOUND" in done.stderr
