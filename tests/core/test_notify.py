"""sd_notify: the datagram systemd reads, to a path or an abstract socket, or nothing."""

import logging
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagegate.core.notify import READY, STOPPING, Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify"
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_sends_the_states_in_one_datagram(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert Notifier(path).notify(READY, "STATUS=serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    assert Notifier(path).notify(STOPPING)
    assert sock.recv(4096) == b"STOPPING=1"


def test_a_leading_at_names_an_abstract_socket() -> None:
    name = f"imagegate-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).notify(READY)
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("unset", [None, ""])
def test_without_a_socket_nothing_is_sent(unset: str | None) -> None:
    assert not Notifier(unset).notify(READY)


def test_a_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert not Notifier(str(tmp_path / "absent")).notify(READY)
        assert not Notifier("vsock:2:1234").notify(READY)
    assert "could not notify systemd (READY=1)" in caplog.text
    assert "NOTIFY_SOCKET=vsock:2:1234 is not a Unix socket" in caplog.text
