"""The state directory holds keys, the index (prompts, subjects) and every image: it is
the server's own, 0700. Created so, tightened when found looser, checked by
check-config without being created."""

import logging
import os
import stat
from pathlib import Path

from imagegate.core.errors import ConfigError

log = logging.getLogger("imagegate.statedir")


def prepare_state_dir(path: Path) -> None:
    """Create `path` 0700, or take it over: a mode open to group or others is tightened."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)
            log.warning(
                "state_dir %s was mode %04o, open to others; tightened to %04o",
                path,
                mode,
                mode & 0o700,
            )
    except OSError as err:
        raise ConfigError(f"state_dir: cannot use {path}: {err.strerror}") from None


def state_dir_problem(path: Path) -> str | None:
    """Why this user could not use `path` as its state directory, or None."""
    if path.exists():
        if not path.is_dir():
            return f"state_dir: {path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"state_dir: {path} is not writable by this user"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"state_dir: {path} can't be created ({parent} is not writable by this user)"
    return None
