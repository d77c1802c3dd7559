"""Run the installed `imagegate` command as a real process, as a user would."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.harness import free_socket

COMMAND = [sys.executable, "-m", "imagegate"]


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IMAGEGATE_")}
    env.update(settings)
    return env


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@contextmanager
def serving(state_dir: Path, *args: str, **settings: str) -> Iterator[tuple[str, "Popen"]]:
    """Start `imagegate serve` on a free port; yield its base URL once /healthz answers."""
    port = free_port()
    env = clean_env(IMAGEGATE_STATE_DIR=str(state_dir), IMAGEGATE_PORT=str(port), **settings)
    process = subprocess.Popen(
        [*COMMAND, *args, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early: {process.communicate()[1]}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not become healthy within 30 s")
            time.sleep(0.1)
        yield base_url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


Popen = subprocess.Popen[str]
