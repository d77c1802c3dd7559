"""The state directory holds keys, the index (prompts, subjects) and every image: it is
the server's own, 0700. Created so, tightened when found looser, checked by
check-config without being created.

With `[storage] accel_redirect`, nginx reads the blob files itself, and is let through
the directory to them and no further. The operator names the web server's user in an
ACL entry (`setfacl -m u:www-data:x`); the group bits of a directory with an ACL are
its mask, which caps that entry, so the directory is 0710 then, and the owning group's
own entry stays empty. Without an ACL the group bits would let the owning group in:
the directory stays 0700 and start-up says what to run. Inside, nothing but `blobs/`
is open to anyone but the owner.
"""

import logging
import os
import stat
import struct
from pathlib import Path

from imagegate.core.errors import ConfigError

log = logging.getLogger("imagegate.statedir")


WEB_PASSAGE = 0o010
"""The group bits (with an ACL: the mask) of a state directory nginx passes through."""
WEB_READABLE = frozenset({"blobs"})
_ACCESS_ACL = "system.posix_acl_access"
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP = 0x02, 0x04, 0x08


def prepare_state_dir(path: Path, web_passage: bool = False) -> None:
    """Create `path` 0700, or take it over: a mode open to group or others is tightened.
    With `web_passage`, 0710 is not open when the directory has an ACL (see above)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        allowed = 0o700 | (WEB_PASSAGE if web_passage and passage_acl(path) else 0)
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
    everyone else's rights from everything else in it (an index file made under a
    loose umask), then, if the directory has an ACL, open its mask to 0710. Run it
    once the storage has made its files."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in WEB_READABLE or entry.is_symlink():
                    continue
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o077:
                    os.chmod(entry.path, mode & ~0o077)
                    log.info(
                        "%s was mode %04o; tightened to %04o before the web server is let "
                        "through %s (accel_redirect)",
                        entry.path,
                        mode,
                        mode & ~0o077,
                        path,
                    )
        if not passage_acl(path):
            log.warning(
                "accel_redirect: nginx cannot reach the images until its user, and no "
                "group, may pass through %s: run setfacl -m u:www-data:x,g::- %s "
                "(www-data on Debian, nginx on RHEL), then restart imagegate; until then "
                "the directory stays 0700",
                path,
                path,
            )
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & WEB_PASSAGE:
            path.chmod(mode | WEB_PASSAGE)
    except OSError as err:
        raise ConfigError(
            f"state_dir: cannot open {path} to the web server: {err.strerror}"
        ) from None


def passage_acl(path: Path) -> bool:
    """Whether `path`'s access ACL names a user who may pass (the web server) and lets
    no group in: not the owning group (its own entry, which the mode's group bits no
    longer show once there is an ACL) and no named group."""
    try:
        acl = os.getxattr(path, _ACCESS_ACL)
    except OSError:  # none, or a file system without extended attributes
        return False
    # Linux's format: a 4-byte version (2), then 8-byte entries (tag, permissions, id).
    if len(acl) < 4 or struct.unpack_from("<I", acl)[0] != 2 or (len(acl) - 4) % 8:
        return False
    entries = [struct.unpack_from("<HHI", acl, at)[:2] for at in range(4, len(acl), 8)]
    user = any(tag == _ACL_USER and perm & 1 for tag, perm in entries)
    groups = any(tag in (_ACL_GROUP_OBJ, _ACL_GROUP) and perm for tag, perm in entries)
    return user and not groups


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
