"""The state directory's modes: the owner's alone, or passable by the web server with
accel_redirect, which then finds nothing but the blobs open."""

import stat
from pathlib import Path

import pytest

from imagegate.core.statedir import open_to_web_server, prepare_state_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("found", "web_passage", "kept"),
    [
        (None, False, 0o700),
        (None, True, 0o700),  # made 0700; open_to_web_server adds the passage
        (0o755, False, 0o700),
        (0o710, False, 0o700),  # accel_redirect turned off: the passage closes
        (0o710, True, 0o710),
        (0o751, True, 0o710),
        (0o777, True, 0o710),
    ],
)
def test_prepare_tightens_all_but_the_passage_asked_for(
    tmp_path: Path, found: int | None, web_passage: bool, kept: int
) -> None:
    state = tmp_path / "state"
    if found is not None:
        state.mkdir()
        state.chmod(found)
    prepare_state_dir(state, web_passage=web_passage)
    assert mode(state) == kept


def test_the_web_server_finds_only_the_blobs_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prepare_state_dir(state, web_passage=True)
    (state / "blobs").mkdir(mode=0o711)
    (state / "blobs").chmod(0o711)
    index = state / "imagegate.sqlite3"
    index.write_bytes(b"")
    index.chmod(0o644)  # made under a loose umask
    key = state / "link-signing.key"
    key.write_bytes(b"")
    key.chmod(0o600)
    (state / "tmp").mkdir(mode=0o755)
    (state / "tmp").chmod(0o755)

    open_to_web_server(state)
    assert mode(state) == 0o710
    assert mode(index) == 0o640
    assert mode(key) == 0o600
    assert mode(state / "tmp") == 0o750
    assert mode(state / "blobs") == 0o711  # the blob store's to set
    prepare_state_dir(state, web_passage=True)  # the next start keeps it so
    assert mode(state) == 0o710
