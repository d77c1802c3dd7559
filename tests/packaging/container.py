"""A Debian 12 container booted with a real systemd as its PID 1 (systemd-nspawn -b),
for the tests that need systemd itself: `Type=notify`, `systemctl`, maintainer scripts.

The root file system comes from debian-rootfs.sh, which caches it as a tarball (built
once, in a few minutes); each boot unpacks a fresh copy and deletes it afterwards. The
container has no network (`--private-network`, only its own loopback). Commands run in
it with nsenter, in all of its namespaces.
"""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOTFS_SCRIPT = Path(__file__).with_name("debian-rootfs.sh")
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "tar")


def require_container_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("boots a container with systemd-nspawn: needs root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} missing; `make test` installs debootstrap and "
            "systemd-container (as root, with apt)"
        )


def rootfs_tarball() -> Path:
    """The cached root file system, built by debian-rootfs.sh when missing."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOTFS_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{ROOTFS_SCRIPT.name} failed:\n{result.stderr}")
    print(f"\nroot file system ({time.monotonic() - started:.1f} s): {result.stdout.strip()}")
    return Path(result.stdout.strip())


@dataclass(frozen=True)
class Container:
    root: Path
    """The container's / on this machine: files can be read and written through it."""
    leader: int
    """The host's PID of the container's PID 1 (its systemd)."""

    def run(
        self, *command: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command in all of the container's namespaces, as its root."""
        return self._run(
            ["nsenter", "--all", f"--target={self.leader}", *command], check, timeout, input
        )

    def run_in_network(
        self, *command: str, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A command of this machine (its files, its Python) in the container's network
        only: it reaches the container's loopback, which nothing else can."""
        return self._run(
            ["nsenter", f"--target={self.leader}", "--net", *command], True, timeout, None, env
        )

    def _run(
        self,
        command: list[str],
        check: bool,
        timeout: float,
        input: str | None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command,
            input=input,
            # Nothing to answer a question with: a command that asks fails, never waits.
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container: {' '.join(command[3:])} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


@contextmanager
def booted(tarball: Path, directory: Path, name: str = "imagegate-test") -> Iterator[Container]:
    """Unpack the tarball into directory/name, boot it, yield once systemd has finished
    booting; power it off and delete the copy at the end, whatever happened."""
    root = directory / name
    root.mkdir()
    process: subprocess.Popen[bytes] | None = None
    leader: int | None = None
    console = directory / f"{name}.console"
    try:
        started = time.monotonic()
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xzf", str(tarball)],
            check=True,
            timeout=300,
        )
        with console.open("wb") as output:
            process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    # No system bus on this machine to register with (and no machined).
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    f"--machine={name}",
                    f"--directory={root}",
                ],
                # cgroup v2 inside; without it nspawn may pick a hybrid layout.
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        leader = _leader(process, console)
        container = Container(root, leader)
        _wait_booted(container, console)
        print(f"\ncontainer booted in {time.monotonic() - started:.1f} s (unpacking included)")
        yield container
    finally:
        if process is not None:
            _power_off(process, leader)
        shutil.rmtree(root, ignore_errors=True)
        console.unlink(missing_ok=True)


def _wait_booted(container: Container, console: Path) -> None:
    """Until the boot is done, systemctl may not answer (no private bus yet: it fails
    at once), or queue jobs behind the boot's."""
    deadline = time.monotonic() + 120
    while True:
        state = container.run("systemctl", "is-system-running", "--wait", check=False)
        if state.stdout.strip() in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the container did not boot: {state.stdout}{state.stderr}\n{_tail(console)}"
            )
        time.sleep(0.1)


def _leader(process: subprocess.Popen[bytes], console: Path) -> int:
    """The container's PID 1: nspawn's child whose PID in its own namespace is 1, once it
    runs systemd (before, it is nspawn setting the container up)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {process.returncode}:\n{_tail(console)}")
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        for child in children.read_text().split():
            try:
                status = Path(f"/proc/{child}/status").read_text()
                comm = Path(f"/proc/{child}/comm").read_text().strip()
            except FileNotFoundError:
                continue  # gone meanwhile
            nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspids.split()[-1] == "1" and comm == "systemd":
                return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no container init under systemd-nspawn:\n{_tail(console)}")


def _power_off(process: subprocess.Popen[bytes], leader: int | None) -> None:
    """SIGTERM asks nspawn for a clean shutdown of the container. If that hangs, SIGKILL
    to the container's PID 1, which takes every process inside with it, and to nspawn."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if leader is not None:
            # Still nspawn's child while nspawn runs: the PID can't be another process's.
            os.kill(leader, signal.SIGKILL)
        process.kill()
        process.wait()


def _tail(console: Path, lines: int = 40) -> str:
    text = console.read_text(errors="replace") if console.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
