"""The batch client's parts that need no gateway: the admission gate and request ids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from gateway.cli.batch.runner import AdmissionGate, FileUpload, file_request_id, local_status
from subtitler.gateway.v1 import gateway_pb2


def test_a_refusal_holds_uploads_until_its_hint_or_until_a_job_of_the_batch_ends() -> None:
    async def scenario() -> None:
        gate = AdmissionGate()
        await asyncio.wait_for(gate.wait_open(), 1)  # open to start with
        gate.refused(retry_after_s=0.05)
        waiting = asyncio.create_task(gate.wait_open())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await asyncio.wait_for(waiting, 1)  # the hint's time passed
        gate.refused(retry_after_s=30)
        waiting = asyncio.create_task(gate.wait_open())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        gate.job_ended()  # room in the queue: long before 30 s
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


def test_the_gate_counts_the_time_since_the_batch_last_moved() -> None:
    now = [100.0]

    async def scenario() -> None:
        gate = AdmissionGate(now=lambda: now[0])
        now[0] = 160.0
        assert gate.stalled_s() == 60.0
        gate.admitted()
        assert gate.stalled_s() == 0.0

    asyncio.run(scenario())


def test_request_ids_are_stable_under_a_prefix_and_random_without() -> None:
    assert file_request_id("run-7", "/media/a.wav") == file_request_id("run-7", "/media/a.wav")
    assert file_request_id("run-7", "/media/a.wav") != file_request_id("run-7", "/media/b.wav")
    assert file_request_id("run-7", "/media/a.wav").startswith("run-7/")
    assert len(file_request_id("x" * 111, "/media/a.wav")) == 128
    assert file_request_id("", "/media/a.wav") != file_request_id("", "/media/a.wav")


def test_a_read_error_ends_the_upload_and_is_kept() -> None:
    def messages() -> Iterator[gateway_pb2.UploadMediaRequest]:
        yield gateway_pb2.UploadMediaRequest(chunk=b"first")
        raise PermissionError(13, "Permission denied", "clip.wav")

    upload = FileUpload(messages())
    assert [message.chunk for message in upload] == [b"first"]
    assert isinstance(upload.read_error, PermissionError)
    assert local_status(upload.read_error) == "PERMISSION_DENIED"
