"""Which process holds something (a quota reservation, a staging file), and whether it
is gone.

A holder names its machine (host name and PID namespace, hashed), its pid and the pid's
start time, so that a pid reused by a later process is not taken for the one that died.
A holder of another machine, another container sharing the state directory among
them, is never judged from here: what it holds ends with its lease or its age.
"""

import hashlib
import os
import socket
from functools import cache
from pathlib import Path


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    return stat[stat.rfind(")") + 2 :].split()[19]


MACHINE_ID = "/etc/machine-id"


@cache
def machine() -> str:
    """This host and PID namespace: where a pid means this process and no other. The
    machine id tells apart hosts that share a host name, since the first PID namespace
    has the same name on every Linux host; unlike a boot id, it survives a reboot, after
    which the processes of the boot before are judged gone at once."""
    parts = [socket.gethostname()]
    for path, read in (("/proc/self/ns/pid", os.readlink), (MACHINE_ID, _text)):
        try:
            parts.append(read(path))
        except OSError:
            parts.append("")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _text(path: str) -> str:
    return Path(path).read_text().strip()


def this_process() -> str:
    """A holder name for this process: machine:pid:start."""
    pid = os.getpid()
    return f"{machine()}:{pid}:{_start_time(pid)}"


def is_gone(holder: str) -> bool:
    """True only for a holder of this machine whose process no longer runs."""
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != machine() or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(started) and _start_time(pid) not in ("", started)


def local_tag() -> str:
    """This process as it goes into file names: machine.pid.start."""
    return this_process().replace(":", ".")


def local_tag_is_gone(tag: str) -> bool:
    """`is_gone` for a `local_tag`."""
    return is_gone(tag.replace(".", ":"))
