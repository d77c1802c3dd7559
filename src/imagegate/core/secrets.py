"""Secrets kept in files: read them only when their mode is restrictive, create them 0600.

A secret file may be readable by its group (packages ship `root:imagegate 0640`), but
never by others and never writable by anyone but its owner.
"""

import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from imagegate.core.errors import ConfigError

_FORBIDDEN_BITS = stat.S_IRWXO | stat.S_IWGRP | stat.S_IXGRP


def read_secret_file(path: Path) -> str:
    """Return the stripped content of a secret file, refusing loose permissions."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: secret file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading secret file") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: secret file must be a regular file")
    if info.st_mode & _FORBIDDEN_BITS:
        raise ConfigError(
            f"{path}: secret file mode {stat.S_IMODE(info.st_mode):04o} is too open; "
            f"run: chmod 600 {path}"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read secret file: {err.__class__.__name__}") from None
    if not value:
        raise ConfigError(f"{path}: secret file is empty")
    return value


def load_or_create_secret(path: Path) -> str:
    """Read a generated secret, or create it once with 0600 so it survives restarts."""
    if path.exists():
        return read_secret_file(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    try:
        # O_EXCL: two processes starting together never overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret_file(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot create secret file: {err.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return value


SECRET_MINIMUMS = {
    "bearer_token": 16,
    "link_key": 16,
    "request_state_key": 32,
    "database_password": 1,
    "metrics_token": 16,
    "gallery_client_secret": 16,
}
"""Shortest accepted length of each configured secret, in characters."""


def configured_secret(name: str, value: SecretStr | None, file: Path | None) -> str | None:
    """The secret `name` from the environment, else from its file; None when neither is
    set. Too short (an env line left as `IMAGEGATE_LINK_KEY=`) is a start-up error, not
    a weak key: `serve` and `check-config` refuse it alike."""
    if value is not None:
        text, source = value.get_secret_value(), f"IMAGEGATE_{name.upper()}"
    elif file is not None:
        text, source = read_secret_file(file), str(file)
    else:
        return None
    minimum = SECRET_MINIMUMS[name]
    if len(text.strip()) < minimum:
        raise ConfigError(
            f"{name}: must be at least {minimum} characters (from {source}); "
            "make one with: openssl rand -hex 32"
        )
    return text
