"""The gateway's token file: what it accepts and the clear errors for what it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from gateway.api.auth import TokenTable

GOOD = "0123456789abcdef0123"


def table(tmp_path: Path, text: str) -> TokenTable:
    path = tmp_path / "tokens"
    path.write_text(text)
    return TokenTable.from_file(path)


def test_names_by_token(tmp_path: Path) -> None:
    tokens = table(tmp_path, f"# who may call\n\nalice:{GOOD}\n bob : {GOOD[::-1]} \n")
    assert tokens.client_of(GOOD) == "alice"
    assert tokens.client_of(GOOD[::-1]) == "bob"
    assert tokens.client_of("nobody-has-this-token") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected name:token"),
        (f"alice:{GOOD}\n:{GOOD[::-1]}\n", "line 2: expected name:token"),
        ("alice:short\n", "shorter than 16"),
        (f"alice:{GOOD}\nbob:{GOOD}\n", "also 'alice'"),
        ("# nothing\n", "holds no name:token"),
    ],
)
def test_bad_files_say_which_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        table(tmp_path, text)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        TokenTable.from_file(tmp_path / "missing")
