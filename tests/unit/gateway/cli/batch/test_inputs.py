"""The files of a batch and the names of their outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.batch.inputs import expand_inputs, output_names


def test_outputs_are_named_after_their_inputs() -> None:
    assert output_names([Path("talk.mp4"), Path("clips/intro.wav")], ".srt") == [Path("talk.srt"), Path("intro.srt")]


def test_clashing_names_keep_the_folders_that_tell_them_apart(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "b" / "deep" / "x.mp3", tmp_path / "y.wav"]
    assert output_names(files, ".srt") == [Path("a/x.srt"), Path("b/x.srt"), Path("b/deep/x.srt"), Path("y.srt")]


def test_clashes_in_one_folder_keep_their_suffix_then_get_numbers() -> None:
    files = [Path("x.wav"), Path("x.mp4"), Path("X.wav")]
    assert output_names(files, ".vtt") == [Path("x.wav.vtt"), Path("x.mp4.vtt"), Path("X.wav-2.vtt")]


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    for name in ("b.wav", "a.MP4", ".hidden.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.wav").write_bytes(b"x")
    return tmp_path


def test_a_folder_gives_its_media_files_by_name(clips: Path) -> None:
    files, problems = expand_inputs([str(clips)])
    assert files == [clips / "a.MP4", clips / "b.wav"] and problems == []


def test_patterns_expand_and_each_file_is_sent_once(clips: Path) -> None:
    files, problems = expand_inputs([str(clips / "b.wav"), str(clips / "*.wav"), str(clips / "**" / "c.wav")])
    assert files == [clips / "b.wav", clips / "sub" / "c.wav"] and problems == []


def test_arguments_that_give_no_file_are_problems_not_errors(clips: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    files, problems = expand_inputs([str(clips / "gone.wav"), str(clips / "*.flac"), str(empty), str(clips / "b.wav")])
    assert files == [clips / "b.wav"]
    assert [(problem.status, problem.message) for problem in problems] == [
        ("NOT_FOUND", "no such file"),
        ("NOT_FOUND", "no file matches the pattern"),
        ("NOT_FOUND", "no media files in the folder"),
    ]
