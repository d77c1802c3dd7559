"""A real PostgreSQL server for the tests: Debian's binaries, a throw-away cluster in a
temp directory, on a free loopback port, with password (SCRAM) authentication so that
the password paths are exercised too.

`make test` installs the `postgresql` package when it is missing (as root, with apt).
"""

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
MISSING = (
    "PostgreSQL 15 is not installed (make test installs it as root: apt-get install postgresql)"
)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        """The database's URL without its password, as the config file would hold it."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    async def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password
        )
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return name

    def create_database_now(self, prefix: str = "t") -> str:
        """`create_database` for synchronous callers (createdb, from Debian's package)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [str(BIN / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
            check=True, capture_output=True, env={**os.environ, "PGPASSWORD": self.password},
        )  # fmt: skip
        return name


_SHARED: list[Postgres] = []


def shared_postgres() -> Postgres:
    """One server for the whole test session, started on first use and stopped when
    the session's process exits."""
    if not _SHARED:
        if not available():
            pytest.skip(MISSING)
        running = running_postgres()
        _SHARED.append(running.__enter__())
        atexit.register(running.__exit__, None, None, None)
    return _SHARED[0]


def available() -> bool:
    return (BIN / "pg_ctl").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(*command: str) -> None:
    """Run a server command, as the postgres user when we are root (it refuses root)."""
    user = "postgres" if os.geteuid() == 0 else None
    subprocess.run(command, check=True, capture_output=True, user=user, group=user)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    if not available():
        raise RuntimeError(MISSING)
    # Not under pytest's tmp_path: that is 0700 root's, which the postgres user can't enter.
    root = Path(tempfile.mkdtemp(prefix="imagegate-pg-"))
    root.chmod(0o755)
    data, password_file = root / "data", root / "password"
    password = secrets.token_urlsafe(16)
    password_file.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(password_file, "postgres", "postgres")
    port = _free_port()
    _as_postgres(str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                 f"--pwfile={password_file}", "--no-sync")  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                 options, "start")  # fmt: skip
    try:
        yield Postgres("127.0.0.1", port, "postgres", password)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
