"""Whose a reservation or staging file is, and whether that process is gone."""

import os
import subprocess
import sys

import pytest

from imagegate.storage.processes import is_gone, local_tag, local_tag_is_gone, machine, this_process


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("holder", "gone"),
    [
        (lambda: this_process(), False),
        (lambda: f"{machine()}:{dead_pid()}:1", True),
        (lambda: f"{machine()}:{os.getpid()}:1", True),  # the pid now runs another process
        (lambda: f"0123456789ab:{dead_pid()}:1", False),  # another machine: not judged
        (lambda: f"old-host-name:{dead_pid()}:1", False),  # a holder from before machine ids
        (lambda: "garbage", False),
    ],
)
def test_is_gone(holder: object, gone: bool) -> None:
    assert is_gone(holder()) is gone  # type: ignore[operator]


def test_a_tag_is_a_holder_in_file_names() -> None:
    assert "/" not in local_tag()
    assert ":" not in local_tag()
    assert not local_tag_is_gone(local_tag())
    assert local_tag_is_gone(f"{machine()}.{dead_pid()}.1")
