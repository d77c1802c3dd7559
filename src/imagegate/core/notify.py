"""systemd's readiness protocol (sd_notify): tell the service manager how the service
is doing, so that a `Type=notify` unit is `active` only once the server answers.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket systemd names
in `$NOTIFY_SOCKET`; a name starting with '@' is in the abstract namespace. A few
lines of code, so no dependency. Without a socket (not started by systemd, or by a
unit of another type) nothing is sent.
"""

import logging
import socket

log = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"


class Notifier:
    """Sends states to the socket it was given; `None` makes every call a no-op."""

    def __init__(self, notify_socket: str | None) -> None:
        self._address = _address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning(
                "NOTIFY_SOCKET=%s is not a Unix socket: systemd not notified", notify_socket
            )

    def notify(self, *states: str) -> bool:
        """Send the states (READY, STOPPING, 'STATUS=...') in one datagram. True when
        sent. A failure is logged, never raised: the service works on regardless, and
        systemd's start timeout reports a readiness that never came."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(states).encode())
        except OSError as err:
            log.warning("could not notify systemd (%s): %s", ", ".join(states), err)
            return False
        return True


def _address(notify_socket: str) -> str | None:
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]  # Linux's abstract namespace
    if notify_socket.startswith("/"):
        return notify_socket
    return None  # e.g. systemd's vsock: addresses, for VMs: not for this server
