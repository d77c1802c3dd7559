import os
import stat
from pathlib import Path

import pytest

from imagegate.core.errors import ConfigError
from imagegate.core.secrets import load_or_create_secret, read_secret_file


def test_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "key"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 40
    assert load_or_create_secret(path) == first


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o607])
def test_loose_modes_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    path.write_text("secret-value\n")
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o} is too open; run: chmod 600"):
        read_secret_file(path)


def test_group_readable_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("secret-value\n")
    os.chmod(path, 0o640)
    assert read_secret_file(path) == "secret-value"


def test_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(empty)
    with pytest.raises(ConfigError, match="not found"):
        read_secret_file(tmp_path / "missing")
