"""uvicorn's server, telling systemd (Type=notify) when the port answers and when it
begins to stop.

A module of its own so that the entry point imports uvicorn only to serve HTTP.
"""

import socket

import uvicorn

from imagegate.core.notify import READY, STOPPING, Notifier


class NotifyingServer(uvicorn.Server):
    """The socket is bound and listening long before (the entry point binds it first),
    but requests get no answer until uvicorn serves it: `active` must mean answering."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier, status: str) -> None:
        super().__init__(config)
        self._notifier = notifier
        self._status = status

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The application's startup (lifespan) has run and the listener is serving
        # when this returns; a failed startup exits from inside it instead.
        await super().startup(sockets=sockets)
        if self.started:
            self._notifier.notify(READY, self._status)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # First, so that `systemctl status` says "deactivating" while requests drain.
        self._notifier.notify(STOPPING, "STATUS=shutting down")
        await super().shutdown(sockets=sockets)
