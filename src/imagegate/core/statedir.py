"""The state directory holds keys, the index (prompts, subjects) and every image: it is
the server's own, 0700. Created so, tightened when found looser, checked by
check-config without being created.

With `[storage] accel_redirect`, nginx reads the blob files itself. It is then let
through the directory, and no further than the blobs: the directory is 0710, the
operator gives the web server's user the right to pass through with an ACL entry
(`setfacl -m u:www-data:x`; the group bits cap such an entry, hence the 1), and that
user, one of "others" to everything inside, finds nothing but `blobs/` open to others.
"""

import logging
import os
import stat
from pathlib import Path

from imagegate.core.errors import ConfigError

log = logging.getLogger("imagegate.statedir")


WEB_PASSAGE = 0o010
"""The group bits of a state directory that the web server passes through."""
WEB_READABLE = frozenset({"blobs"})


def prepare_state_dir(path: Path, web_passage: bool = False) -> None:
    """Create `path` 0700, or take it over: a mode open to group or others is tightened.
    With `web_passage`, 0710 is not open (`open_to_web_server` makes it so)."""
    allowed = 0o700 | (WEB_PASSAGE if web_passage else 0)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 & ~allowed:
            path.chmod(mode & allowed)
            log.warning(
                "state_dir %s was mode %04o, open to others; tightened to %04o",
                path,
                mode,
                mode & allowed,
            )
    except OSError as err:
        raise ConfigError(f"state_dir: cannot use {path}: {err.strerror}") from None


def open_to_web_server(path: Path) -> None:
    """Let the web server through `path` to the blobs (accel_redirect): first take
    others' rights from everything else in it (an index file made under a loose umask),
    then make it 0710. Run it once the storage has made its files."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in WEB_READABLE or entry.is_symlink():
                    continue
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o007:
                    os.chmod(entry.path, mode & ~0o007)
                    # Not a warning: the directory kept it from others until now.
                    log.info(
                        "%s was mode %04o, open to others, who include the web server now "
                        "(accel_redirect); tightened to %04o",
                        entry.path,
                        mode,
                        mode & ~0o007,
                    )
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & WEB_PASSAGE:
            path.chmod(mode | WEB_PASSAGE)
    except OSError as err:
        raise ConfigError(
            f"state_dir: cannot open {path} to the web server: {err.strerror}"
        ) from None


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
