"""The state directory's modes: the owner's alone, or passable by the web server with
accel_redirect, which then finds nothing but the blobs open."""

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from imagegate.core.statedir import open_to_web_server, prepare_state_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def give_acl(path: Path, entries: str = "u:nobody:x,g::-") -> None:
    """An ACL entry for a user other than the owner, as the operator's setfacl adds
    (and the owning group's entry emptied, as the README says)."""
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is missing (make test installs the acl package)")
    subprocess.run(["setfacl", "-m", entries, str(path)], check=True)


@pytest.mark.parametrize(
    ("found", "acl", "web_passage", "kept"),
    [
        (None, False, False, 0o700),
        (None, False, True, 0o700),
        (0o755, False, False, 0o700),
        (0o710, False, True, 0o700),  # no ACL: 0710 would let the owning group in
        (0o710, True, False, 0o700),  # accel_redirect turned off: the passage closes
        (0o710, True, True, 0o710),
        (0o751, True, True, 0o710),
        (0o777, True, True, 0o710),
    ],
)
def test_prepare_tightens_all_but_the_passage_asked_for(
    tmp_path: Path, found: int | None, acl: bool, web_passage: bool, kept: int
) -> None:
    state = tmp_path / "state"
    if found is not None:
        state.mkdir()
        state.chmod(found)
    if acl:
        give_acl(state)
    prepare_state_dir(state, web_passage=web_passage)
    assert mode(state) == kept


@pytest.mark.parametrize(
    "entries",
    [
        "u:nobody:x",  # the owning group keeps the r-x it had
        "u:nobody:x,g::-,g:nogroup:x",  # a named group may pass too
        "g::-,g:nogroup:x",  # no user named at all
    ],
)
def test_an_acl_that_lets_a_group_in_or_names_no_user_keeps_0700(
    tmp_path: Path, entries: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    give_acl(state, entries)
    prepare_state_dir(state, web_passage=True)
    open_to_web_server(state)
    assert mode(state) == 0o700


def made_by_a_loose_umask(state: Path) -> dict[str, Path]:
    (state / "blobs").mkdir(mode=0o711)
    (state / "blobs").chmod(0o711)
    files = {"index": state / "imagegate.sqlite3", "key": state / "link-signing.key"}
    for path in files.values():
        path.write_bytes(b"")
        path.chmod(0o644)
    files["tmp"] = state / "tmp"
    files["tmp"].mkdir()
    files["tmp"].chmod(0o755)
    return files


@pytest.mark.parametrize("acl", [True, False])
def test_the_web_server_finds_only_the_blobs_open(tmp_path: Path, acl: bool) -> None:
    state = tmp_path / "state"
    prepare_state_dir(state, web_passage=True)
    if acl:
        give_acl(state)
    files = made_by_a_loose_umask(state)

    open_to_web_server(state)
    assert mode(state) == (0o710 if acl else 0o700)
    assert mode(files["index"]) == 0o600
    assert mode(files["key"]) == 0o600
    assert mode(files["tmp"]) == 0o700
    assert mode(state / "blobs") == 0o711  # the blob store's to set
    prepare_state_dir(state, web_passage=True)  # the next start keeps it so
    assert mode(state) == (0o710 if acl else 0o700)
