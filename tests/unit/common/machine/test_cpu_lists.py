from __future__ import annotations

import pytest

from common.machine.cpu_lists import format_cpu_list, parse_cpu_list


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3,6", (0, 1, 2, 3, 6)), ("5", (5,)), (" 2 , 0-1 ", (0, 1, 2)), ("3,1,3", (1, 3)), ("4-4", (4,))],
)
def test_cpu_lists_are_parsed_sorted_and_without_repeats(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", " ", "a", "0,,1", "3-1", "-1", "1-", "1.5", "0-9000", "0-3;6"])
def test_bad_cpu_lists_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="CPU list"):
        parse_cpu_list(text)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [((0, 1, 2, 3, 6), "0-3,6"), ((0, 1), "0-1"), ((0, 2), "0,2"), ((3, 1, 2), "1-3"), ((), ""), ((7,), "7")],
)
def test_cpu_lists_are_formatted_as_ranges(cpus: tuple[int, ...], text: str) -> None:
    assert format_cpu_list(cpus) == text


def test_formatting_and_parsing_round_trip() -> None:
    cpus = (0, 1, 2, 5, 8, 9, 10, 11, 63)
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus
