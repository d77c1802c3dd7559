"""`imagegate serve` under a systemd-like manager: READY=1 on $NOTIFY_SOCKET once the
port answers, STOPPING=1 when a SIGTERM starts the shutdown (the unit is Type=notify)."""

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import COMMAND, clean_env, free_port


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """What systemd listens on: a datagram socket; the service is given its path."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, path


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def serve_notifying(
    tmp_path: Path, notify: Path, stderr: int
) -> tuple["subprocess.Popen[str]", int, str]:
    """`imagegate serve` told to notify on `notify`: the process, its port, its /healthz."""
    port = free_port()
    env = clean_env(
        IMAGEGATE_STATE_DIR=str(tmp_path / "state"),
        IMAGEGATE_PORT=str(port),
        NOTIFY_SOCKET=str(notify),
    )
    process = subprocess.Popen(
        [*COMMAND, "serve", "--transport", "http"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )
    return process, port, f"http://127.0.0.1:{port}/healthz"


def test_ready_only_once_the_port_answers_and_stopping_on_sigterm(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    process, port, healthz = serve_notifying(tmp_path, path, subprocess.PIPE)
    try:
        sock.settimeout(60)  # the server's imports and start-up, on a slow machine
        ready = sock.recv(4096).decode()
        # Checked at once, on a connection opened only now: a manager that starts
        # clients when it hears READY=1 finds the port answering.
        assert answers(healthz)
        assert ready.splitlines() == [
            "READY=1",
            f"STATUS=serving MCP at http://127.0.0.1:{port}/mcp",
        ]

        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing more while it serves
            sock.recv(4096)

        process.send_signal(signal.SIGTERM)
        sock.settimeout(15)
        assert sock.recv(4096).decode().splitlines()[0] == "STOPPING=1"
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert "could not notify systemd" not in stderr
    assert "Application shutdown complete" in stderr


def test_ready_comes_after_the_port_answers_not_before(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    """The other side of the ordering: until the port answers, no READY=1 has come."""
    sock, path = notify_socket
    sock.setblocking(False)
    process, _, healthz = serve_notifying(tmp_path, path, subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        refused = 0
        ready = b""
        while True:
            # Read the socket first: a READY=1 read here was sent before this request.
            with contextlib.suppress(BlockingIOError):
                ready = sock.recv(4096)
            if answers(healthz):
                break
            assert ready == b"", f"{ready!r} before the port answered"
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            refused += 1
            time.sleep(0.02)
        assert refused > 0  # the test did see the port not answering yet
        if not ready:
            sock.setblocking(True)
            sock.settimeout(15)
            ready = sock.recv(4096)
        assert ready.startswith(b"READY=1\n")
    finally:
        process.terminate()
        process.wait(timeout=15)
