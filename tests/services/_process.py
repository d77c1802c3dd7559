"""Start daemons in the foreground, each in its own process group, and always stop them."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

# Debian puts daemons in sbin, which is not on PATH for every user or CI runner.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin")


class ServiceUnavailable(RuntimeError):
    """A binary the service needs is not installed; tests skip with this message."""


def require(*names: str) -> dict[str, str]:
    """Map each command to its path, or say how to install the missing ones."""
    found: dict[str, str] = {}
    missing: list[str] = []
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    for name in names:
        path = shutil.which(name, path=search)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise ServiceUnavailable(
            f"{', '.join(missing)} not installed; run `make test` as root with apt "
            "(it installs the service packages), or apt-get install them"
        )
    return found


def require_file(path: str) -> str:
    if not os.access(path, os.X_OK):
        raise ServiceUnavailable(
            f"{path} not found; run `make test` as root with apt (it installs it)"
        )
    return path


def free_port() -> int:
    # Bind to port 0 then release: a tiny race, but no daemon here takes port 0 itself.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Processes:
    """Daemons started for one service; `check` turns an early exit into a useful error."""

    log_dir: Path
    started: list[tuple[str, "subprocess.Popen[bytes]"]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.log_dir,
                # Own group, so stopping also reaches any workers the daemon forks.
                start_new_session=True,
            )
        finally:
            log.close()
        self.started.append((name, process))

    def check(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no output)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n, _ in self.started)
                raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{logs}")
            time.sleep(0.1)

    def stop(self, grace: float = 10) -> None:
        # Reverse order: front ends go before the backends they would otherwise log about.
        for _, process in reversed(self.started):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in reversed(self.started):
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            # Also after a clean exit: a forked worker may outlive its parent.
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self.started.clear()


def _signal_group(process: "subprocess.Popen[bytes]", sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@contextmanager
def supervised(log_dir: Path) -> Iterator[Processes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(log_dir)
    try:
        yield processes
    finally:
        processes.stop()
