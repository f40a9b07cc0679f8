"""The files of a batch: the command line's paths, folders and glob patterns
turned into files, and the output name of each."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# What a folder given on the command line contributes: its files with these
# suffixes (any case), not its hidden files nor its subfolders. A file named
# explicitly, or matched by a pattern, is sent whatever its suffix.
MEDIA_SUFFIXES = frozenset(
    {
        *(".3gp", ".aac", ".ac3", ".aif", ".aiff", ".amr", ".au", ".avi", ".caf", ".flac", ".flv", ".gsm"),
        *(".m4a", ".m4v", ".mka", ".mkv", ".mov", ".mp3", ".mp4", ".mpeg", ".mpg", ".mts", ".oga", ".ogg"),
        *(".opus", ".ts", ".wav", ".webm", ".wma", ".wmv"),
    }
)
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class InputProblem:
    """A command-line argument that gave no file to send."""

    argument: str
    # The gRPC status name the gateway would have answered with.
    status: str
    message: str


def is_pattern(argument: str) -> bool:
    """Whether `argument` is a glob pattern the shell left alone (no file has that name)."""
    return bool(GLOB_CHARACTERS & set(argument)) and not Path(argument).exists()


def expand_inputs(arguments: Sequence[str]) -> tuple[list[Path], list[InputProblem]]:
    """The files the arguments name, in their order (a folder's and a
    pattern's files sorted by name), each once; and the arguments that
    named none (a missing file, an empty folder, a pattern that matches nothing)."""
    files: list[Path] = []
    problems: list[InputProblem] = []
    for argument in arguments:
        found, problem = _expand_one(argument)
        files += found
        if problem is not None:
            problems.append(problem)
    return _each_once(files), problems


def _expand_one(argument: str) -> tuple[list[Path], InputProblem | None]:
    if is_pattern(argument):
        # glob.glob, not Path.glob: a pattern may be absolute ('/media/*.wav').
        matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]  # noqa: PTH207
        files = [file for match in matches for file in (media_in_folder(match) if match.is_dir() else [match])]
        return files, None if files else InputProblem(argument, "NOT_FOUND", "no file matches the pattern")
    path = Path(argument)
    if path.is_dir():
        media = media_in_folder(path)
        return media, None if media else InputProblem(argument, "NOT_FOUND", "no media files in the folder")
    if not path.exists():
        return [], InputProblem(argument, "NOT_FOUND", "no such file")
    return [path], None


def media_in_folder(folder: Path) -> list[Path]:
    """The media files directly in `folder`, by name."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in MEDIA_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _each_once(files: list[Path]) -> list[Path]:
    """`files` without repeats of one file (named twice, or by a folder and a pattern)."""
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique


def output_names(files: Sequence[Path], extension: str) -> list[Path]:
    """Each file's output, relative to the output folder: its name with
    `extension` for its suffix (talk.mp4 -> talk.srt). Files whose outputs
    would clash (compared ignoring case, for the file systems that do) are
    told apart, in this order, by the folders their paths differ in
    (a/x.wav, b/x.wav -> a/x.srt, b/x.srt), then by their own suffix
    (x.wav, x.mp4 -> x.wav.srt, x.mp4.srt); any still left clashing gets
    -2, -3... after its name, in the files' order."""
    names = [Path(file.stem + extension) for file in files]
    names = _told_apart(files, names, _with_distinct_folders)
    names = _told_apart(
        files,
        names,
        lambda group_files, group_names: [
            name.with_name(file.name + extension) for file, name in zip(group_files, group_names, strict=True)
        ],
    )
    return _numbered(names)


Renaming = Callable[[list[Path], list[Path]], list[Path]]


def _told_apart(files: Sequence[Path], names: list[Path], rename: Renaming) -> list[Path]:
    """`names` with each group of clashing ones renamed by `rename`, given the group's files and names."""
    renamed = list(names)
    for group in _clashing_groups(names):
        new_names = rename([files[index] for index in group], [names[index] for index in group])
        for index, new_name in zip(group, new_names, strict=True):
            renamed[index] = new_name
    return renamed


def _clashing_groups(names: Sequence[Path]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(str(name).casefold(), []).append(index)
    return [group for group in groups.values() if len(group) > 1]


def _with_distinct_folders(files: list[Path], names: list[Path]) -> list[Path]:
    """Each name under its file's folder, relative to the folder all the files share."""
    folders = [file.resolve().parent for file in files]
    shared = Path(os.path.commonpath(folders))
    return [folder.relative_to(shared) / name for folder, name in zip(folders, names, strict=True)]


def _numbered(names: list[Path]) -> list[Path]:
    """`names`, a clash's later names given -2, -3... (the first free)."""
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, number = name, 1
        while str(candidate).casefold() in taken:
            number += 1
            candidate = name.with_name(f"{name.stem}-{number}{name.suffix}")
        taken.add(str(candidate).casefold())
        unique.append(candidate)
    return unique
