"""Which process holds something (a quota reservation), and whether it is gone.

A holder names its host, its pid and the pid's start time, so that a pid reused by a
later process is not taken for the one that died. A holder on another host is never
judged gone from here.
"""

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    return stat[stat.rfind(")") + 2 :].split()[19]


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def local_tag() -> str:
    """This process among the processes of this host, for names of its own files."""
    pid = os.getpid()
    return f"{pid}.{_start_time(pid)}"


def local_tag_is_gone(tag: str) -> bool:
    """True when the process of this host that `local_tag` named no longer runs."""
    pid, _, started = tag.partition(".")
    return pid.isdigit() and is_gone(f"{socket.gethostname()}:{pid}:{started}")


def is_gone(holder: str) -> bool:
    """True only for a holder of this host whose process no longer runs."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(started) and _start_time(pid) not in ("", started)
